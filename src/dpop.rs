//! DPoP (RFC 9449): access and refresh tokens bound to a key the client holds, so that a
//! stolen token is useless without it.
//!
//! A [`DpopKey`] belongs to one token set: the application's login makes the first tokens with
//! it ([`DpopKey::proof`] signs the proof of the authorization-code exchange) and hands both over
//! ([`TokenSet::with_dpop_key`](crate::TokenSet::with_dpop_key)). From then on the key travels
//! with the set: it is saved with it in every store (inside the private file, sealed in Redis
//! and SQL), adopted with it by other processes, and replaced only by a new login. Every token
//! request and every request to an allowed origin then carries a fresh proof; the access token
//! goes in `Authorization: DPoP <token>`.
//!
//! Servers may demand a nonce (RFC 9449 §8, §9): a `400 use_dpop_nonce` from the token
//! endpoint or a `401` with `WWW-Authenticate: DPoP error="use_dpop_nonce"` from a resource
//! server is answered once with the `DPoP-Nonce` it sent, and the nonce of each origin is kept
//! and updated from every response that carries one. The token endpoint rejects such a request
//! before processing it, so the retry spends no refresh token twice.

mod key;
mod nonce;
mod proof;

pub use key::{DpopAlgorithm, DpopKey};
pub(crate) use nonce::Nonces;
pub(crate) use proof::{access_token_hash, htu};
