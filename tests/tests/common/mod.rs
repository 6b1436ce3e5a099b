//! Modules shared by several integration test files, each of which declares `mod common;`
//! (a file of this folder is no test binary of its own).

pub mod http;
