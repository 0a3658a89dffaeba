use accrete_monoids::{Count, Monoid};

#[derive(Monoid)]
struct Stats {
    views: Count,
    ratio: f64,
}

fn main() {}
