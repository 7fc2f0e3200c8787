//! Reading a Prometheus text exposition.

/// `GET url` and its body.
pub async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let r = http.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.text().await.unwrap()
}

/// The value of the sample written exactly `series` (`name{label="v"}`), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples() {
        let t = "# TYPE x counter\nx_total{a=\"b\"} 3\nx_total 4\n";
        assert_eq!(super::sample(t, "x_total{a=\"b\"}"), Some(3.0));
        assert_eq!(super::sample(t, "x_total"), Some(4.0));
        assert_eq!(super::sample(t, "y"), None);
    }
}
