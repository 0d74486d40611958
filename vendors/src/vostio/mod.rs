//! vostio adapter: being written (issue 5).
