#![deny(unused_must_use)]

async fn start(client: errand::Client) {
    // Configures a worker and drops it: nothing runs.
    errand::Worker::new(client).concurrency(4);
}

fn main() {
    let _ = start;
}
