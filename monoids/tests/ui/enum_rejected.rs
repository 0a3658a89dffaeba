use accrete_monoids::Monoid;

#[derive(Monoid)]
enum Status {
    Open,
    Closed,
}

fn main() {}
