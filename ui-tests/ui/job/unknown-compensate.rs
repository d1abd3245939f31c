// A compensation that does not exist is an error on its path, with rustc's suggestion.
#[errand::job]
async fn refund(order_id: i64) -> Result<(), std::io::Error> {
    let _ = order_id;
    Ok(())
}

#[errand::job(compensate = refnud)]
async fn charge(order_id: i64) -> Result<(), std::io::Error> {
    let _ = order_id;
    Ok(())
}

fn main() {}
