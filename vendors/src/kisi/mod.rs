//! kisi adapter: being written (issue 5).
