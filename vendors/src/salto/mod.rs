//! salto adapter: being written (issue 5).
