//! In-process link conditions (being written).
