//! Headers between `http`'s [`HeaderMap`] and the protocol's form, where
//! one name carries one value: repeated values are joined with `", "`, and
//! `Set-Cookie` lines (which must not be joined with commas) with `"\n"`.

use beeline_frame::v2::Headers;
use http::{HeaderMap, HeaderName, HeaderValue};

/// `map` in the protocol's form.
pub fn frame_headers(map: &HeaderMap) -> Headers {
    let mut out = Headers::new();
    for (name, value) in map {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let separator = if name == http::header::SET_COOKIE {
            "\n"
        } else {
            ", "
        };
        out.entry(name.as_str().to_owned())
            .and_modify(|joined: &mut String| {
                joined.push_str(separator);
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// `headers` as a [`HeaderMap`], `Set-Cookie` lines split again. A name or
/// value `http` does not accept is left out.
pub fn http_headers(headers: &Headers) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let values: Vec<&str> = if name == http::header::SET_COOKIE {
            value.split('\n').collect()
        } else {
            vec![value.as_str()]
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                out.append(name.clone(), value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_lines_survive_the_round_trip() {
        let mut headers = HeaderMap::new();
        headers.append("set-cookie", HeaderValue::from_static("a=1; Path=/"));
        headers.append(
            "set-cookie",
            HeaderValue::from_static("b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
        );
        headers.append("accept", HeaderValue::from_static("text/html"));
        headers.append("accept", HeaderValue::from_static("*/*"));
        let frame = frame_headers(&headers);
        assert_eq!(frame["accept"], "text/html, */*");
        let back = http_headers(&frame);
        let cookies: Vec<_> = back.get_all("set-cookie").iter().collect();
        assert_eq!(cookies.len(), 2);
        assert_eq!(cookies[1], "b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT");
    }
}
