struct Billing;

impl Billing {
    #[errand::job]
    async fn charge(&self, order_id: i64) -> Result<(), std::io::Error> {
        let _ = order_id;
        Ok(())
    }
}

fn main() {}
