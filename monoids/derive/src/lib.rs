//! `#[derive(Monoid)]`: field-wise `Semigroup` and `Monoid` for structs whose
//! fields are monoids. Use it through `accrete_monoids::Monoid` (or
//! `accrete::monoids::Monoid`); see the documentation there.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Index, Member, Path, parse_macro_input, parse_quote};

/// Derives `Semigroup` and `Monoid` field by field, and `Commutative`,
/// `Idempotent` and `Group` whenever every field has them. Also implements
/// `FieldWise`, which the law harness uses to shrink a counterexample field
/// by field and to name the fields that differ (no quickcheck involved unless
/// `accrete-monoids` is built with its `laws` feature).
///
/// Struct attributes:
/// - `#[monoid(commutative)]`, `#[monoid(idempotent)]`, `#[monoid(group)]`:
///   require the law: a field without it is a compile error that names the
///   field;
/// - `#[monoid(crate = "path")]`: where `accrete_monoids` lives, if it is
///   neither a dependency nor re-exported by `accrete`.
#[proc_macro_derive(Monoid, attributes(monoid))]
pub fn derive_monoid(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

#[derive(Default)]
struct Options {
    krate: Option<Path>,
    require: Vec<(&'static str, Span)>,
}

fn options(input: &DeriveInput) -> syn::Result<Options> {
    let mut opts = Options::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("monoid")) {
        attr.parse_nested_meta(|meta| {
            for law in ["commutative", "idempotent", "group"] {
                if meta.path.is_ident(law) {
                    opts.require.push((law, meta.path.span()));
                    return Ok(());
                }
            }
            if meta.path.is_ident("crate") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                opts.krate = Some(lit.parse()?);
                return Ok(());
            }
            Err(meta.error(
                "unknown monoid attribute: expected `commutative`, `idempotent`, `group` or `crate = \"path\"`",
            ))
        })?;
    }
    Ok(opts)
}

/// Where the algebra lives, as seen from the crate being compiled.
fn crate_path(opts: &Options) -> Path {
    if let Some(path) = &opts.krate {
        return path.clone();
    }
    // `accrete-monoids` declares `extern crate self as accrete_monoids`, so
    // this path works inside it, in its tests and in its doctests alike.
    match std::env::var("CARGO_PKG_NAME").as_deref() {
        Ok("accrete") => parse_quote!(::accrete::monoids),
        _ => match dependency_named_accrete_only() {
            true => parse_quote!(::accrete::monoids),
            false => parse_quote!(::accrete_monoids),
        },
    }
}

/// True when the crate being compiled depends on `accrete` but not on
/// `accrete-monoids`: then the algebra is reached through `accrete::monoids`.
fn dependency_named_accrete_only() -> bool {
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return false;
    };
    let Ok(manifest) = std::fs::read_to_string(std::path::Path::new(&dir).join("Cargo.toml"))
    else {
        return false;
    };
    let mentions = |name: &str| {
        manifest.lines().any(|line| {
            let line = line.trim_start();
            line.strip_prefix(name).is_some_and(|rest| {
                let rest = rest.trim_start();
                rest.starts_with('=') || rest.starts_with('.')
            }) || line.starts_with(&format!("[dependencies.{name}]"))
                || line.starts_with(&format!("[dev-dependencies.{name}]"))
        })
    };
    mentions("accrete") && !mentions("accrete-monoids")
}

fn expand(input: DeriveInput) -> syn::Result<TokenStream2> {
    let opts = options(&input)?;
    let krate = crate_path(&opts);
    let fields = match &input.data {
        Data::Struct(s) => &s.fields,
        Data::Enum(e) => {
            return Err(syn::Error::new(
                e.enum_token.span,
                "#[derive(Monoid)] supports structs only: an enum has no field-wise combine \
                 (write `Semigroup` and `Monoid` by hand, or wrap the enum in a primitive such as \
                 `LastWriteWins<T>`)",
            ));
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "#[derive(Monoid)] supports structs only",
            ));
        }
    };

    let name = &input.ident;
    let members: Vec<Member> = match fields {
        Fields::Named(named) => named
            .named
            .iter()
            .map(|f| Member::Named(f.ident.clone().unwrap()))
            .collect(),
        Fields::Unnamed(unnamed) => (0..unnamed.unnamed.len())
            .map(|i| Member::Unnamed(Index::from(i)))
            .collect(),
        Fields::Unit => Vec::new(),
    };
    let types: Vec<&syn::Type> = fields.iter().map(|f| &f.ty).collect();
    let generic = !input.generics.params.is_empty();

    let bounds = |trait_: TokenStream2| -> TokenStream2 {
        // Generic structs get ordinary bounds. Concrete field types get a
        // higher-ranked binder, which turns a bound that does not hold into
        // "this impl does not apply" instead of a hard error (trivial bounds).
        let preds = types.iter().map(|ty| {
            if generic {
                quote!(#ty: #trait_)
            } else {
                quote!(for<'__accrete> #ty: #trait_)
            }
        });
        quote!(#(#preds,)*)
    };

    let mut generics = input.generics.clone();
    generics.make_where_clause();
    let (impl_g, ty_g, where_g) = generics.split_for_impl();
    let where_preds = &where_g.expect("made above").predicates;
    let with = |trait_: TokenStream2| {
        let b = bounds(trait_);
        quote!(where #where_preds #b)
    };

    let semigroup = quote!(#krate::Semigroup);
    let monoid = quote!(#krate::Monoid);

    // Method bodies use each field's span, so an error names the field.
    let combine = members.iter().zip(&types).map(|(m, ty)| {
        quote_spanned!(ty.span()=> <#ty as #semigroup>::combine(&mut self.#m, &other.#m);)
    });
    let combine_owned = members.iter().zip(&types).map(|(m, ty)| {
        quote_spanned!(ty.span()=> <#ty as #semigroup>::combine_owned(&mut self.#m, other.#m);)
    });
    let identity = members
        .iter()
        .zip(&types)
        .map(|(m, ty)| quote_spanned!(ty.span()=> #m: <#ty as #monoid>::identity()));
    let is_identity = members
        .iter()
        .zip(&types)
        .map(|(m, ty)| quote_spanned!(ty.span()=> <#ty as #monoid>::is_identity(&self.#m)));
    let invert = members
        .iter()
        .zip(&types)
        .map(|(m, ty)| quote_spanned!(ty.span()=> <#ty as #krate::Group>::invert(&mut self.#m);));

    // Semigroup and Monoid bind only generic structs: on a concrete struct an
    // unbounded impl makes a non-monoid field a hard error on that field.
    let plain = |trait_: TokenStream2| {
        if generic {
            with(trait_)
        } else {
            quote!(#where_g)
        }
    };
    let semigroup_where = plain(semigroup.clone());
    let monoid_where = plain(monoid.clone());
    let comm_where = with(quote!(#krate::Commutative));
    let idem_where = with(quote!(#krate::Idempotent));
    let group_where = with(quote!(#krate::Group));

    // `#[monoid(commutative)]` etc.: a per-field assertion with the field's
    // span, so a missing law is reported on the field that lacks it.
    let required = opts.require.iter().map(|(law, span)| {
        let trait_ = match *law {
            "commutative" => quote_spanned!(*span=> #krate::Commutative),
            "idempotent" => quote_spanned!(*span=> #krate::Idempotent),
            _ => quote_spanned!(*span=> #krate::Group),
        };
        let checks = types
            .iter()
            .map(|ty| quote_spanned!(ty.span()=> __accrete_requires_law::<#ty>();));
        quote! {
            const _: () = {
                #[allow(dead_code)]
                fn __accrete_requires_law<T: #trait_>() {}
                #[allow(dead_code)]
                fn __accrete_check #impl_g () #where_g { #(#checks)* }
            };
        }
    });

    // `FieldWise`: the law harness's view of the fields. Each field goes
    // through a probe of `accrete_monoids::__field_probes` that picks the
    // field's `Arbitrary` shrinker (only when accrete-monoids is built with
    // `laws`: quickcheck is never the user's runtime dependency), its
    // `PartialEq + Debug`, or nothing; so the impl compiles for every struct.
    let field_names: Vec<String> = members
        .iter()
        .map(|m| match m {
            Member::Named(ident) => ident.to_string(),
            Member::Unnamed(index) => index.index.to_string(),
        })
        .collect();
    let probes = quote!(#krate::__field_probes);
    let field_wise = quote! {
        #[automatically_derived]
        #[allow(unused_mut, unused_imports, unused_variables)]
        impl #impl_g #krate::FieldWise for #name #ty_g #where_g {
            const FIELD_NAMES: &'static [&'static str] = &[#(#field_names),*];

            fn shrink_fields(&self) -> ::std::vec::Vec<Self> {
                use #probes::{
                    CloneNone as _, CloneSome as _, Probe as __AccreteProbe, ShrinkArbitrary as _,
                    ShrinkNone as _,
                };
                let mut out = ::std::vec::Vec::new();
                #(
                    for smaller in (&&__AccreteProbe(&self.#members)).__accrete_shrink() {
                        match (&&__AccreteProbe(self)).__accrete_clone() {
                            ::core::option::Option::Some(mut next) => {
                                next.#members = smaller;
                                out.push(next);
                            }
                            ::core::option::Option::None => break,
                        }
                    }
                )*
                out
            }

            fn differing_fields(&self, other: &Self) -> ::std::vec::Vec<#krate::FieldDiff> {
                use #probes::{DiffDebug as _, DiffNone as _, Probe as __AccreteProbe};
                let mut out = ::std::vec::Vec::new();
                #(
                    if let ::core::option::Option::Some((left, right)) =
                        (&&__AccreteProbe(&self.#members)).__accrete_diff(&other.#members)
                    {
                        out.push(#krate::FieldDiff { field: #field_names, left, right });
                    }
                )*
                out
            }
        }
    };

    let body_identity = match fields {
        Fields::Named(_) => quote!(#name { #(#identity),* }),
        Fields::Unnamed(_) => {
            let vals = types
                .iter()
                .map(|ty| quote_spanned!(ty.span()=> <#ty as #monoid>::identity()));
            quote!(#name ( #(#vals),* ))
        }
        Fields::Unit => quote!(#name),
    };

    Ok(quote! {
        #[automatically_derived]
        impl #impl_g #semigroup for #name #ty_g #semigroup_where {
            #[inline]
            fn combine(&mut self, other: &Self) {
                #(#combine)*
                let _ = other;
            }
            #[inline]
            fn combine_owned(&mut self, other: Self) {
                #(#combine_owned)*
                let _ = other;
            }
        }

        #[automatically_derived]
        impl #impl_g #monoid for #name #ty_g #monoid_where {
            #[inline]
            fn identity() -> Self {
                #body_identity
            }
            #[inline]
            fn is_identity(&self) -> bool {
                true #(&& #is_identity)*
            }
        }

        #[automatically_derived]
        impl #impl_g #krate::Commutative for #name #ty_g #comm_where {}
        #[automatically_derived]
        impl #impl_g #krate::Idempotent for #name #ty_g #idem_where {}
        #[automatically_derived]
        impl #impl_g #krate::Group for #name #ty_g #group_where {
            #[inline]
            fn invert(&mut self) {
                #(#invert)*
            }
        }

        #field_wise

        #(#required)*
    })
}
