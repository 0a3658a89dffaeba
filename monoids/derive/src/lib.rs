//! `#[derive(Monoid)]` for accrete-monoids (placeholder, being written).
use proc_macro::TokenStream;

/// Derives `Semigroup` and `Monoid`.
#[proc_macro_derive(Monoid, attributes(monoid))]
pub fn derive_monoid(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
