//! `--webhook`'s value: one or more http(s) URLs, comma-separated (the
//! configuration file takes one string per key, so a list is one string).

use std::fmt;

/// The webhook receivers, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrls(pub Vec<String>);

impl fmt::Display for WebhookUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl serde::Serialize for WebhookUrls {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Parses `http://host/path,https://other/path`.
pub fn parse_webhook_urls(text: &str) -> Result<WebhookUrls, String> {
    let urls: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err("no URL given".to_owned());
    }
    for url in &urls {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("{url:?} has no host"));
        }
    }
    Ok(WebhookUrls(urls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_checked_and_printed_back() {
        let urls = parse_webhook_urls("http://127.0.0.1:9000/hook, https://example.com/x")
            .expect("parses");
        assert_eq!(urls.0.len(), 2);
        assert_eq!(
            urls.to_string(),
            "http://127.0.0.1:9000/hook,https://example.com/x"
        );
        assert_eq!(
            parse_webhook_urls("ftp://x"),
            Err("\"ftp://x\" is not an http:// or https:// URL".to_owned())
        );
        assert!(parse_webhook_urls("http:///path").is_err());
        assert!(parse_webhook_urls(" , ").is_err());
    }
}
