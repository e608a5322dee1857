//! `X-Twilio-Signature`: base64 HMAC-SHA1, under the account's auth token,
//! of the URL Twilio called followed by each POSTed field's name and value,
//! names sorted. Checked exactly as Twilio's SDKs check it: the URL with and
//! without its port, repeated fields in order of value, in constant time.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// The signature Twilio sends for `url` and the form `params`: the URL, then
/// each name followed by its value, names sorted; a repeated name's distinct
/// values sorted too (as twilio-node orders them).
pub fn expected_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    BASE64.encode(mac.finalize().into_bytes())
}

/// The forms of `url` Twilio's SDKs accept a signature for: without its
/// port, with its port made explicit, and both again with the query string
/// re-encoded the legacy way (Node's `querystring`).
fn url_variants(url: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Vec::new();
    }
    let mut without_port = parsed.clone();
    let _ = without_port.set_port(None);
    let with_port = match parsed.port() {
        Some(_) => parsed.to_string(),
        None => {
            // The WHATWG serialisation drops a default port, so build it by hand.
            let standard = if parsed.scheme() == "https" { 443 } else { 80 };
            let mut text = format!("{}://", parsed.scheme());
            if !parsed.username().is_empty() || parsed.password().is_some() {
                text.push_str(parsed.username());
                if let Some(password) = parsed.password() {
                    text.push(':');
                    text.push_str(password);
                }
                text.push('@');
            }
            text.push_str(parsed.host_str().unwrap_or_default());
            text.push_str(&format!(":{standard}{}", parsed.path()));
            if let Some(query) = parsed.query() {
                text.push('?');
                text.push_str(query);
            }
            if let Some(fragment) = parsed.fragment() {
                text.push('#');
                text.push_str(fragment);
            }
            text
        }
    };
    let without_port = without_port.to_string();
    let mut variants = vec![without_port.clone(), with_port.clone()];
    if parsed.query().is_some_and(|q| !q.is_empty()) {
        variants.push(legacy_querystring(&without_port));
        variants.push(legacy_querystring(&with_port));
    }
    variants
}

/// `url` with its query decoded and encoded again as Node's `querystring`
/// does (keys grouped in first-seen order, `!'()*` left as they are).
fn legacy_querystring(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push(value.into_owned()),
            None => groups.push((key.into_owned(), vec![value.into_owned()])),
        }
    }
    let escape = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    };
    let query: Vec<String> = groups
        .iter()
        .flat_map(|(k, values)| {
            values
                .iter()
                .map(move |v| format!("{}={}", escape(k), escape(v)))
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// Whether `header` is Twilio's signature of this request, `url` being the
/// full URL Twilio was configured with (scheme, host, path, query).
pub fn is_valid(auth_token: &str, header: &str, url: &str, params: &[(String, String)]) -> bool {
    let header = header.trim().as_bytes();
    if header.is_empty() {
        return false;
    }
    // Every variant is compared, whatever the first answer, so the time
    // taken tells nothing.
    url_variants(url).iter().fold(false, |valid, candidate| {
        let expected = expected_signature(auth_token, candidate, params);
        let same: bool = expected.as_bytes().ct_eq(header).into();
        valid | same
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // The published example of Twilio's SDK tests.
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn example() -> Vec<(String, String)> {
        params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    #[test]
    fn the_published_example_signs_as_twilio_documents() {
        assert_eq!(
            expected_signature(TOKEN, URL, &example()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(is_valid(
            TOKEN,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            URL,
            &example()
        ));
    }

    #[test]
    fn the_signature_holds_with_or_without_the_default_port() {
        assert!(is_valid(
            TOKEN,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &example()
        ));
        let with_port = expected_signature(
            TOKEN,
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &example(),
        );
        assert!(is_valid(TOKEN, &with_port, URL, &example()));
    }

    #[test]
    fn any_change_is_refused() {
        let mut altered = example();
        altered[2].1 = "1235".into();
        assert!(!is_valid(
            TOKEN,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            URL,
            &altered
        ));
        assert!(!is_valid(
            "54321",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            URL,
            &example()
        ));
        assert!(!is_valid(
            TOKEN,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &example()
        ));
        assert!(!is_valid(TOKEN, "", URL, &example()));
        assert!(!is_valid(
            TOKEN,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "not a url",
            &example()
        ));
    }

    #[test]
    fn legacy_query_strings_are_re_encoded_as_node_does() {
        assert_eq!(
            legacy_querystring("https://a.b/p?x=a%20b&y=(1)&x=c+d"),
            "https://a.b/p?x=a%20b&x=c%20d&y=(1)"
        );
    }

    #[test]
    fn repeated_fields_are_signed_in_order_of_value() {
        let a = params(&[("MediaUrl", "b"), ("MediaUrl", "a")]);
        let b = params(&[("MediaUrl", "a"), ("MediaUrl", "b")]);
        assert_eq!(
            expected_signature(TOKEN, URL, &a),
            expected_signature(TOKEN, URL, &b)
        );
    }
}
