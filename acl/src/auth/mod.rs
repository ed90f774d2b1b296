//! Auth methods and binding rules: from an external credential to the identities and links of a new
//! token.
