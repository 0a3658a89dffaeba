//! `#[derive(Pushdown)]`: the MongoDB backend's derive, kept apart from the
//! algebra's `#[derive(Monoid)]` (`accrete-derive`), which knows nothing of
//! any backend. Use it through `accrete::store::pushdown::Pushdown` (the
//! `accrete` crate's `mongodb` feature).

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{ToTokens, quote};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Path, parse_macro_input, parse_quote};

/// Derives `accrete::store::pushdown::Pushdown` for a struct with named
/// fields that all implement it: each field's operators at `path.field`, so a
/// write of the struct is one blind MongoDB update. Needs the `accrete`
/// crate with its `mongodb` feature; use it through
/// `accrete::store::pushdown::Pushdown`.
///
/// Field names are the Rust names: a `#[serde(rename)]` on a field would
/// store it under another name than the update targets, so it is refused.
#[proc_macro_derive(Pushdown)]
pub fn derive_pushdown(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_pushdown(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand_pushdown(input: DeriveInput) -> syn::Result<TokenStream2> {
    let named = match &input.data {
        Data::Struct(syn::DataStruct {
            fields: Fields::Named(named),
            ..
        }) => named,
        _ => {
            return Err(syn::Error::new(
                input.ident.span(),
                "#[derive(Pushdown)] supports structs with named fields only: MongoDB updates \
                 address the stored document's fields by name",
            ));
        }
    };
    for attr in input
        .attrs
        .iter()
        .chain(named.named.iter().flat_map(|f| f.attrs.iter()))
    {
        if attr.path().is_ident("serde") {
            let text = attr.meta.to_token_stream().to_string();
            if text.contains("rename") || text.contains("flatten") {
                return Err(syn::Error::new(
                    attr.span(),
                    "#[derive(Pushdown)] addresses fields by their Rust names: remove \
                     `rename`/`flatten` from the serde attributes",
                ));
            }
        }
    }
    let krate: Path = parse_quote!(::accrete::store::pushdown);
    let name = &input.ident;
    let idents: Vec<&syn::Ident> = named
        .named
        .iter()
        .map(|f| f.ident.as_ref().unwrap())
        .collect();
    let names: Vec<String> = idents.iter().map(|i| i.to_string()).collect();
    let mut generics = input.generics.clone();
    {
        let where_clause = generics.make_where_clause();
        for f in &named.named {
            let ty = &f.ty;
            where_clause
                .predicates
                .push(parse_quote!(#ty: #krate::Pushdown));
        }
        where_clause
            .predicates
            .push(parse_quote!(Self: ::accrete::monoids::Monoid));
    }
    let (impl_g, ty_g, where_g) = generics.split_for_impl();
    Ok(quote! {
        impl #impl_g #krate::Pushdown for #name #ty_g #where_g {
            fn push_down(&self, path: &str, update: &mut #krate::Update) -> bool {
                true #(&& #krate::field_push_down(&self.#idents, path, #names, update))*
            }
            fn changes_when(&self, path: &str) -> ::core::option::Option<#krate::Document> {
                #krate::any_changes(
                    [#(#krate::field_changes_when(&self.#idents, path, #names)),*]
                        .into_iter()
                        .flatten(),
                )
            }
        }
    })
}
