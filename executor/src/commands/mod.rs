pub mod cache;
pub mod run;
pub mod trace;
pub mod worker;
