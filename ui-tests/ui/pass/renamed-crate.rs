// A user who renamed the dependency tells `#[job]` where errand is.
extern crate errand as my_errand;

mod jobs {
    #[my_errand::job(crate = "::my_errand", queue = "mail", key = "greet-<id>")]
    pub async fn greet(id: i64) -> Result<(), std::io::Error> {
        let _ = id;
        Ok(())
    }
}

fn main() {
    let request = jobs::greet::with(7);
    assert_eq!(request.key().as_deref(), Some("greet-7"));
    assert_eq!(<jobs::greet as my_errand::Job>::OPTIONS.queue, "mail");
}
