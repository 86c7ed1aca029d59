//! When is a credential due? Pure functions of metadata, policy and `now`.
