//! Where a login is kept besides the client's memory.

use crate::Tokens;

/// Where a login is kept besides the client's memory: a file, a keychain, a database row.
///
/// A refresh token works once, and presenting a spent one again ends the whole login. So whoever
/// keeps tokens must keep each new pair the moment it exists ([`TokenStore::save`]), and a client
/// whose login another process may renew (two terminals on one saved session) must look there
/// before it renews itself ([`TokenStore::load`]).
pub trait TokenStore: Send + Sync {
    /// The newest pair kept, if any: what another process may have renewed meanwhile.
    fn load(&self) -> Option<Tokens>;
    /// Keeps the pair a login or a refresh just got.
    fn save(&self, tokens: &Tokens);
    /// Excludes the other processes sharing the store while the returned guard lives: a renewal
    /// reads the store, refreshes and saves under it, so two processes whose tokens expired
    /// together do not both present the same refresh token. May block (it runs on a blocking
    /// thread). The default excludes nothing, for a store no other process shares.
    fn exclusive(&self) -> Box<dyn Send> {
        Box::new(())
    }
}
