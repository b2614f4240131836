//! Scopes are the contract's (`auth_contract::scope`: one grammar, one `satisfies`); this
//! module only turns a refused list into the auth service's validation error for a field.

pub use auth_contract::scope::Scopes;

use crate::error::Error;

/// Parses a request's list of scopes for `field`; `None` means `default`.
pub fn parse_list(field: &str, raw: Option<&[String]>, default: &Scopes) -> Result<Scopes, Error> {
    match raw {
        None => Ok(default.clone()),
        Some(raw) => Scopes::parse_list(raw).map_err(|err| Error::validation(field, err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_list_is_the_default_and_a_bad_one_names_its_field() {
        assert_eq!(parse_list("scopes", None, &Scopes::all()).ok(), Some(Scopes::all()));
        let err = parse_list("scopes", Some(&["Orders:read".to_owned()]), &Scopes::all()).err();
        assert!(matches!(err, Some(Error::Validation(fields)) if fields.len() == 1 && fields[0].field == "scopes"));
    }
}
