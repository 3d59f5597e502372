//! Maglev consistent hashing (Eisenbud et al., NSDI 2016).
#![cfg_attr(not(feature = "std"), no_std)]
