//! Roles are the contract's (`auth_contract::role`): the auth service stores them and its
//! tokens carry them under the same names every other service reads.

pub use auth_contract::role::Role;
