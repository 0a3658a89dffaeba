//! The demo domain behind `accrete demo`: a shop whose events arrive at
//! least once, out of order, from an upstream system.
//!
//! Four read models over one event stream:
//!
//! | model | key | state | laws |
//! | --- | --- | --- | --- |
//! | [`ProductSales`] | product | orders, units, revenue ([`Sales`]) | commutative: exactly once |
//! | [`PageVisitors`] | page | distinct visitors ([`HyperLogLog`]) | idempotent: duplicates harmless |
//! | [`TopProducts`] | `()` | best sellers by units ([`TopK`]) | commutative, within its error bound |
//! | [`LastSeen`] | visitor | latest page by event time ([`Last`]) | idempotent |
//!
//! And a cluster hook, [`BestSeller`]: a threshold hook that announces a
//! product once when its units sold pass a mark.

use serde::{Deserialize, Serialize};

use accrete::event::EventId;
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::{Count, HyperLogLog, Last, Monoid, Sum, TopK};

/// Something that happened in the shop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ShopEvent {
    /// A visitor looked at a page.
    Viewed {
        /// Who.
        visitor: u64,
        /// Which page.
        page: String,
        /// When, ms since the epoch.
        at_ms: i64,
    },
    /// A visitor bought a product.
    Purchased {
        /// The order number.
        order: u64,
        /// Who.
        visitor: u64,
        /// What.
        product: String,
        /// How many.
        units: u32,
        /// For how much, in cents.
        cents: i64,
        /// When, ms since the epoch.
        at_ms: i64,
    },
}

impl ShopEvent {
    /// The routing key: the visitor, so one visitor's events stay in order.
    pub(crate) fn routing_key(&self) -> [u8; 8] {
        match self {
            ShopEvent::Viewed { visitor, .. } | ShopEvent::Purchased { visitor, .. } => {
                visitor.to_le_bytes()
            }
        }
    }

    /// Event time.
    pub(crate) fn at_ms(&self) -> i64 {
        match self {
            ShopEvent::Viewed { at_ms, .. } | ShopEvent::Purchased { at_ms, .. } => *at_ms,
        }
    }
}

/// Sales of one product.
#[derive(Monoid, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mongodb", derive(accrete::store::pushdown::Pushdown))]
#[monoid(crate = "accrete::monoids")]
pub(crate) struct Sales {
    /// Orders.
    pub(crate) orders: Count,
    /// Units sold.
    pub(crate) units: Sum<u64>,
    /// Revenue in cents.
    pub(crate) revenue_cents: Sum<i64>,
}

/// Sales per product.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProductSales;

impl ReadModel for ProductSales {
    const NAME: &'static str = "product_sales";
    type Event = ShopEvent;
    type Key = String;
    type State = Sales;

    fn project(&self, e: &ShopEvent, out: &mut Deltas<String, Sales>) -> Result<(), String> {
        if let ShopEvent::Purchased {
            order,
            product,
            units,
            cents,
            ..
        } = e
        {
            if *units == 0 {
                return Err(format!("order {order} buys zero units of {product}"));
            }
            out.push(
                product.clone(),
                Sales {
                    orders: Count::one(),
                    units: Sum(u64::from(*units)),
                    revenue_cents: Sum(*cents),
                },
            );
        }
        Ok(())
    }
}

/// Distinct visitors per page.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PageVisitors;

impl ReadModel for PageVisitors {
    const NAME: &'static str = "page_visitors";
    const EXACTLY_ONCE: bool = false;
    type Event = ShopEvent;
    type Key = String;
    type State = HyperLogLog<12>;

    fn project(
        &self,
        e: &ShopEvent,
        out: &mut Deltas<String, HyperLogLog<12>>,
    ) -> Result<(), String> {
        if let ShopEvent::Viewed { visitor, page, .. } = e {
            let mut h = HyperLogLog::new();
            h.insert(visitor);
            out.push(page.clone(), h);
        }
        Ok(())
    }
}

/// The best-selling products by units, over the whole shop.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TopProducts;

impl ReadModel for TopProducts {
    const NAME: &'static str = "top_products";
    type Event = ShopEvent;
    type Key = ();
    type State = TopK<String, 100>;

    fn project(
        &self,
        e: &ShopEvent,
        out: &mut Deltas<(), TopK<String, 100>>,
    ) -> Result<(), String> {
        if let ShopEvent::Purchased { product, units, .. } = e
            && *units > 0
        {
            out.push((), TopK::with_count(product.clone(), u64::from(*units)));
        }
        Ok(())
    }
}

/// The latest page each visitor viewed, by event time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LastSeen;

impl ReadModel for LastSeen {
    const NAME: &'static str = "last_seen";
    const EXACTLY_ONCE: bool = false;
    type Event = ShopEvent;
    type Key = u64;
    type State = Last<String>;

    fn project(&self, e: &ShopEvent, out: &mut Deltas<u64, Last<String>>) -> Result<(), String> {
        if let ShopEvent::Viewed {
            visitor,
            page,
            at_ms,
        } = e
        {
            out.push(*visitor, Last::new(*at_ms, page.clone()));
        }
        Ok(())
    }
}

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        accrete::monoids::hash::stable_hash(&self.0)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Skewed towards 0: roughly Zipf-like over `0..n`.
    pub(crate) fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as u64 % n.max(1)
    }
}

/// `n` shop events: views of product pages by 20 000 visitors, one in ten a
/// purchase; every 997th purchase is for zero units (a projection error).
pub(crate) fn shop_events(n: usize, seed: u64) -> Vec<ShopEvent> {
    let mut rng = Rng(seed);
    let products = 300;
    (0..n as u64)
        .map(|i| {
            let visitor = rng.below(20_000);
            let product = rng.skewed(products);
            let at_ms = 1_700_000_000_000 + i as i64 * 7;
            if rng.below(10) == 0 {
                let units = if i % 997 == 3 {
                    0
                } else {
                    1 + rng.skewed(4) as u32
                };
                ShopEvent::Purchased {
                    order: i,
                    visitor,
                    product: format!("sku-{product:03}"),
                    units,
                    cents: i64::from(units) * (199 + (product as i64 * 37) % 5_000),
                    at_ms,
                }
            } else {
                ShopEvent::Viewed {
                    visitor,
                    page: format!("/products/sku-{product:03}"),
                    at_ms,
                }
            }
        })
        .collect()
}

/// How the upstream system delivered the events: each entry is an index
/// into the events and the upstream id it carries. Some events come twice
/// or three times (at least once), and the order is shuffled within windows
/// of `window` (out of order).
pub(crate) fn at_least_once(
    n: usize,
    duplicate_rate: f64,
    window: usize,
    seed: u64,
) -> Vec<(usize, EventId)> {
    let mut rng = Rng(seed ^ 0x5eed);
    let upstream = accrete::event::source_id("upstream-shop");
    let mut out = Vec::with_capacity(n + n / 4);
    for i in 0..n {
        let id = EventId {
            source: upstream,
            partition: (i % 4) as u32,
            offset: (i / 4) as u64,
        };
        let copies = if (rng.below(1_000_000) as f64) < duplicate_rate * 1e6 {
            2 + rng.below(2)
        } else {
            1
        };
        for _ in 0..copies {
            out.push((i, id));
        }
    }
    for chunk in out.chunks_mut(window.max(1)) {
        for i in (1..chunk.len()).rev() {
            chunk.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    out
}

/// A threshold hook on [`ProductSales`]: announces a product once, when its
/// units sold reach `units` (a monotone predicate: units only grow, so it
/// flips once whatever the delivery order). The announcements go to a
/// list here; a real one would call a notification service with the
/// trigger's idempotency key.
#[derive(Debug, Default)]
pub(crate) struct BestSeller {
    /// The mark.
    pub(crate) units: u64,
    /// The products announced, with their idempotency keys (shared: keep a
    /// clone to read them while the runtime owns the hook).
    pub(crate) announced: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl BestSeller {
    /// The hook's name.
    pub(crate) const HOOK: &'static str = "best_seller";
}

impl accrete::hooks::ClusterHook for BestSeller {
    type Model = ProductSales;
    const NAME: &'static str = BestSeller::HOOK;
    const ONCE: bool = true;

    fn fires(&self, sales: &Sales) -> bool {
        sales.units.0 >= self.units
    }

    fn run(&self, t: &accrete::hooks::Trigger<'_, ProductSales>) -> Result<(), String> {
        self.announced
            .lock()
            .map_err(|_| "the announcement list is poisoned".to_string())?
            .push((t.key.clone(), t.idempotency_key.to_string()));
        Ok(())
    }
}
