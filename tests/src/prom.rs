//! Reading Prometheus text exposition scraped from the edge's or the agent's `/metrics`.

/// The value of one Prometheus sample in `text`, given its exact name and labels
/// (`name{label="v",…}`); 0 when the series is absent (counters not yet incremented
/// are not exported).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// Sum of the samples of `name` whose label set contains every one of `labels`
/// (`key="value"` fragments, e.g. `outcome="denied"`); 0 when none match.
pub fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    samples(text, name)
        .filter(|(l, _)| labels.iter().all(|want| l.contains(want)))
        .map(|(_, v)| v)
        .sum()
}

/// Every sample of `name`: its label text (`{…}`, empty when unlabelled) and value.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = if rest.starts_with('{') {
            let end = rest.find('}')?;
            (&rest[..=end], rest[end + 1..].trim())
        } else if rest.starts_with(' ') {
            ("", rest.trim())
        } else {
            return None;
        };
        Some((labels, value.parse().ok()?))
    })
}
