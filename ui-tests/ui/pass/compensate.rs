// A job names the job that undoes it; a saga then takes the pair from the step alone.
#[errand::job]
async fn refund(order_id: i64, cents: i64) -> Result<(), std::io::Error> {
    let _ = (order_id, cents);
    Ok(())
}

#[errand::job(queue = "payments", compensate = refund)]
async fn charge(ctx: &errand::Context, order_id: i64, cents: i64) -> Result<(), std::io::Error> {
    let _ = (ctx, order_id, cents);
    Ok(())
}

mod billing {
    #[errand::job]
    pub async fn release_stock(sku: String, count: u32) -> Result<(), std::io::Error> {
        let _ = (sku, count);
        Ok(())
    }
}

#[errand::job(compensate = billing::release_stock)]
async fn reserve_stock(sku: String, count: u32) -> Result<(), std::io::Error> {
    let _ = (sku, count);
    Ok(())
}

fn main() {
    let _ = errand::Saga::new("checkout")
        .compensated_step(reserve_stock::with("sku-1".into(), 2))
        .compensated_step(charge::with(42, 1999));
    fn undone_by<J: errand::Compensated<Compensation = C>, C: errand::Job>() {}
    undone_by::<charge, refund>();
}
