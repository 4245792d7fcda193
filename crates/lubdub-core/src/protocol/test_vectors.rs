//! Reads the test vectors block of `docs/PROTOCOL.md`: the core's vector
//! test checks the codec against them, and the fuzz crate seeds its corpus
//! with them, so both read the one parser.

/// `(name, bytes)` for every vector between the `<!-- vectors:begin -->`
/// and `<!-- vectors:end -->` markers of `markdown`.
///
/// # Panics
/// When a marker is missing or a vector's bytes are not pairs of hex
/// digits: the document is the project's own, and a broken one must stop
/// the test or generator that reads it.
pub fn parse(markdown: &str) -> Vec<(String, Vec<u8>)> {
    let start = markdown
        .find("<!-- vectors:begin -->")
        .expect("PROTOCOL.md has a vectors:begin marker");
    let end = markdown
        .find("<!-- vectors:end -->")
        .expect("PROTOCOL.md has a vectors:end marker");
    markdown[start..end]
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with("<!--") && !line.starts_with("```"))
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().expect("a name").to_owned();
            let hex: String = words.collect();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
                .collect();
            (name, bytes)
        })
        .collect()
}
