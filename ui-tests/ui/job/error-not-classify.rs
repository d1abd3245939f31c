#[derive(Debug)]
pub struct GatewayError;

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gateway error")
    }
}

#[errand::job]
async fn charge(order_id: i64) -> Result<(), GatewayError> {
    let _ = order_id;
    Ok(())
}

fn main() {}
