use accrete_monoids::{Count, Monoid};

#[derive(Monoid)]
#[monoid(idempotent)]
struct Stats {
    views: Count,
}

fn main() {}
