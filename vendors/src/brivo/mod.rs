//! brivo adapter: being written (issue 5).
