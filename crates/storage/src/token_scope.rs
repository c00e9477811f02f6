//! A token's scope as both backends store it: `NULL` for every app, else the app names
//! joined by commas (a name is a slug, so it never holds a comma).
use shared::store::TokenRole;
use shared::{AppName, StoreError};

pub(crate) fn apps_to_text(apps: Option<&[AppName]>) -> Option<String> {
    apps.map(|apps| {
        apps.iter()
            .map(AppName::as_str)
            .collect::<Vec<_>>()
            .join(",")
    })
}

pub(crate) fn apps_from_text(raw: Option<&str>) -> Result<Option<Vec<AppName>>, StoreError> {
    raw.map(|raw| {
        raw.split(',')
            .filter(|name| !name.is_empty())
            .map(|name| AppName::parse(name).map_err(StoreError::backend))
            .collect()
    })
    .transpose()
}

pub(crate) fn role_from_text(raw: &str) -> Result<TokenRole, StoreError> {
    TokenRole::parse(raw).map_err(|e| StoreError::backend(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_null_is_every_app() {
        let apps = vec![
            AppName::parse("shop").unwrap(),
            AppName::parse("blog").unwrap(),
        ];
        let text = apps_to_text(Some(&apps));
        assert_eq!(text.as_deref(), Some("shop,blog"));
        assert_eq!(apps_from_text(text.as_deref()).unwrap(), Some(apps));
        assert_eq!(apps_to_text(None), None);
        assert_eq!(apps_from_text(None).unwrap(), None);
    }
}
