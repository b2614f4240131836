//! Bad-input tables for the credential routes (being written).
