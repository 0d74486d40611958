//! vostio adapter tests: being written (issue 5).
