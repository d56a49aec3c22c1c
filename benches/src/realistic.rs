//! A content store as real ones are (issue 19): document text drawn from a large vocabulary
//! with Zipf-distributed word frequencies, and most documents in already-compressed containers
//! with real headers: office files (zip of deflated XML), PDFs (deflated streams), JPEG and PNG
//! images. New versions of documents are near-duplicates: the text edited a little, then packed
//! again, so a container's bytes change from the edit on, as they do when Office saves.
//! Deterministic in the seed.

use std::io::Write;
use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::Generated;

/// Words in the vocabulary.
const VOCABULARY: usize = 60_000;
/// The Zipf exponent of word frequencies (natural-language text is near 1).
const ZIPF_S: f64 = 1.07;

/// The kinds of content a realistic content store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Plain text (`.txt`, `.csv`, e-mail bodies).
    Text,
    /// Office documents: zip containers of deflated XML (`.docx`, `.xlsx`, `.odt`).
    Office,
    /// PDFs with deflated content streams.
    Pdf,
    /// JPEG photographs (entropy-coded: incompressible).
    Jpeg,
    /// PNG images (deflated).
    Png,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 5] = [Class::Text, Class::Office, Class::Pdf, Class::Jpeg, Class::Png];

    /// Its name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Class::Text => "text",
            Class::Office => "office (zip)",
            Class::Pdf => "pdf",
            Class::Jpeg => "jpeg",
            Class::Png => "png",
        }
    }
}

/// A vocabulary of made-up words and the cumulative Zipf weights to draw them by.
pub struct Vocabulary {
    words: Vec<String>,
    cdf: Vec<f64>,
}

impl Vocabulary {
    /// The vocabulary of `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        const SYLLABLES: &[&str] = &[
            "al", "be", "con", "de", "en", "fi", "ga", "ho", "in", "ju", "ka", "lo", "man", "ne",
            "or", "pre", "qua", "re", "sto", "tra", "un", "ver", "wi", "xe", "ya", "zu", "ment",
            "tion", "ing", "er", "ly", "ous", "ic", "ist", "ance", "port",
        ];
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x0076_6f63_6162);
        let words = (0..VOCABULARY)
            .map(|_| {
                let n = rng.gen_range(1..=4);
                (0..n).map(|_| SYLLABLES[rng.gen_range(0..SYLLABLES.len())]).collect::<String>()
            })
            .collect();
        let mut total = 0.0;
        let cdf = (1..=VOCABULARY)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(ZIPF_S);
                total
            })
            .collect::<Vec<f64>>();
        let cdf = cdf.iter().map(|c| c / total).collect();
        Vocabulary { words, cdf }
    }

    fn word(&self, rng: &mut SmallRng) -> &str {
        let u: f64 = rng.gen();
        let i = self.cdf.partition_point(|&c| c < u).min(self.words.len() - 1);
        &self.words[i]
    }

    /// About `len` bytes of prose: sentences, capitals, punctuation, numbers and dates.
    pub fn text(&self, rng: &mut SmallRng, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 64);
        let mut start = true;
        while out.len() < len {
            let w = self.word(rng);
            if start {
                let mut cs = w.chars();
                if let Some(c) = cs.next() {
                    out.extend(c.to_uppercase().to_string().bytes());
                    out.extend_from_slice(cs.as_str().as_bytes());
                }
                start = false;
            } else {
                out.extend_from_slice(w.as_bytes());
            }
            match rng.gen_range(0..100) {
                0..=6 => {
                    out.extend_from_slice(b". ");
                    start = true;
                }
                7..=9 => out.extend_from_slice(b", "),
                10 => out.extend_from_slice(format!(" {} ", rng.gen_range(1..100_000)).as_bytes()),
                11 => out.extend_from_slice(
                    format!(
                        " 20{:02}-{:02}-{:02} ",
                        rng.gen_range(10..27),
                        rng.gen_range(1..13),
                        rng.gen_range(1..29)
                    )
                    .as_bytes(),
                ),
                12 => {
                    out.extend_from_slice(b".\n\n");
                    start = true;
                }
                _ => out.push(b' '),
            }
        }
        out.truncate(len);
        out
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// An office document holding `text`: a zip of deflated XML parts, with local headers and a
/// central directory.
fn office(rng: &mut SmallRng, text: &[u8]) -> Vec<u8> {
    let mut xml =
        b"<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<w:document><w:body>"
            .to_vec();
    for para in text.split(|&b| b == b'\n').filter(|p| !p.is_empty()) {
        xml.extend_from_slice(
            b"<w:p><w:r><w:rPr><w:sz w:val=\"22\"/></w:rPr><w:t xml:space=\"preserve\">",
        );
        xml.extend_from_slice(para);
        xml.extend_from_slice(b"</w:t></w:r></w:p>");
    }
    xml.extend_from_slice(b"</w:body></w:document>");
    let styles = format!(
        "<w:styles rsid=\"{:08X}\">{}</w:styles>",
        rng.gen::<u32>(),
        "<w:style w:type=\"paragraph\"/>".repeat(40)
    );
    let parts: [(&str, &[u8]); 3] = [
        (
            "[Content_Types].xml",
            b"<Types><Default Extension=\"xml\" ContentType=\"application/xml\"/></Types>",
        ),
        ("word/styles.xml", styles.as_bytes()),
        ("word/document.xml", &xml),
    ];
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in parts {
        let packed = deflate(data);
        let offset = out.len() as u32;
        let header = |sig: &[u8], central: bool| {
            let mut h = sig.to_vec();
            if central {
                h.extend_from_slice(&20u16.to_le_bytes());
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&8u16.to_le_bytes()); // deflate
            h.extend_from_slice(&0x5a21u16.to_le_bytes()); // time
            h.extend_from_slice(&0x5b7bu16.to_le_bytes()); // date
            h.extend_from_slice(&crc32(data).to_le_bytes());
            h.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                h.extend_from_slice(&[0u8; 8]); // comment, disk, attributes
                h.extend_from_slice(&0u32.to_le_bytes());
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend_from_slice(&header(b"PK\x03\x04", false));
        out.extend_from_slice(&packed);
        central.extend_from_slice(&header(b"PK\x01\x02", true));
    }
    let at = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0\x03\0\x03\0");
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A PDF holding `text` in deflated content streams, a page each.
fn pdf(text: &[u8]) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (n, page) in text.chunks(6000).enumerate() {
        let mut content = b"BT /F1 11 Tf 72 720 Td 14 TL\n".to_vec();
        for line in page.chunks(90) {
            content.push(b'(');
            content.extend(line.iter().filter(|&&b| b != b'(' && b != b')' && b != b'\\'));
            content.extend_from_slice(b") '\n");
        }
        content.extend_from_slice(b"ET\n");
        let packed = deflate(&content);
        offsets.push(out.len());
        out.extend_from_slice(
            format!(
                "{} 0 obj\n<< /Length {} /Filter /FlateDecode >>\nstream\n",
                n + 4,
                packed.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&packed);
        out.extend_from_slice(b"\nendstream\nendobj\n");
    }
    out.extend_from_slice(format!("xref\n0 {}\n", offsets.len() + 4).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(b"trailer\n<< /Root 1 0 R >>\nstartxref\n0\n%%EOF\n");
    out
}

/// A JPEG of about `len` bytes: real markers (SOI, APP0/JFIF, DQT, SOF0, DHT, SOS, EOI) around
/// entropy-coded data, which is as incompressible as random bytes (0xFF stuffed as in JPEG).
fn jpeg(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut out = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x01\x00\x48\x00\x48\x00\x00".to_vec();
    out.extend_from_slice(b"\xff\xdb\x00\x43\x00");
    out.extend((1..=64u8).map(|q| q.saturating_mul(2)));
    out.extend_from_slice(
        b"\xff\xc0\x00\x11\x08\x0b\x40\x0f\x00\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01",
    );
    out.extend_from_slice(b"\xff\xc4\x00\x1f\x00\x00\x01\x05\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b");
    out.extend_from_slice(b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00");
    let mut scan = vec![0u8; len.saturating_sub(out.len() + 2)];
    rng.fill_bytes(&mut scan);
    for b in scan {
        out.push(b);
        if b == 0xff {
            out.push(0);
        }
    }
    out.extend_from_slice(b"\xff\xd9");
    out
}

/// A PNG of about `len` bytes of image data: rows of a noisy gradient, filtered and deflated
/// in IDAT chunks, with real chunk CRCs.
fn png(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let width = 512usize;
    let rows = (len / (width * 3)).max(1);
    let mut raw = Vec::with_capacity(rows * (width * 3 + 1));
    for y in 0..rows {
        raw.push(1); // the Sub filter
        for x in 0..width * 3 {
            let noise: u8 = if rng.gen_ratio(1, 3) { rng.gen() } else { 0 };
            raw.push(((x + y) as u8 / 16).wrapping_add(noise & 0x1f));
        }
    }
    let chunk = |kind: &[u8], data: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = (width as u32).to_be_bytes().to_vec();
    ihdr.extend_from_slice(&(rows as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr, &mut out);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = z.write_all(&raw);
    let packed = z.finish().unwrap_or_default();
    for piece in packed.chunks(64 << 10) {
        chunk(b"IDAT", piece, &mut out);
    }
    chunk(b"IEND", b"", &mut out);
    out
}

/// The bytes of one document of `class` from `text` (its words; images ignore it), about `len`
/// bytes long.
#[must_use]
pub fn document(rng: &mut SmallRng, class: Class, text: &[u8], len: usize) -> Vec<u8> {
    match class {
        Class::Text => text.to_vec(),
        Class::Office => office(rng, text),
        Class::Pdf => pdf(text),
        Class::Jpeg => jpeg(rng, len),
        Class::Png => png(rng, len),
    }
}

/// One new document of `class`, about `len` bytes, with text of `vocabulary`.
#[must_use]
pub fn sample(rng: &mut SmallRng, vocabulary: &Vocabulary, class: Class, len: usize) -> Vec<u8> {
    let text = vocabulary.text(rng, text_len(class, len));
    document(rng, class, &text, len)
}

/// How much text a container of `class` needs to come out near `len` bytes.
fn text_len(class: Class, len: usize) -> usize {
    match class {
        Class::Text => len,
        // Deflated prose of a large vocabulary is about 40% of its size.
        Class::Office | Class::Pdf => len * 5 / 2,
        Class::Jpeg | Class::Png => 0,
    }
}

/// A class drawn by the shares of a content store: documents in containers dominate.
fn draw_class(rng: &mut SmallRng) -> Class {
    match rng.gen_range(0..100) {
        0..=14 => Class::Text,
        15..=49 => Class::Office,
        50..=69 => Class::Pdf,
        70..=89 => Class::Jpeg,
        _ => Class::Png,
    }
}

/// Writes about `total_bytes` of a realistic contentstore under `root` (created), in
/// Alfresco's `YYYY/M/D/H/M/<uuid>.bin` layout; one document in five is a new version of an
/// earlier one (its text edited a little and packed again).
///
/// # Errors
/// I/O errors writing the tree.
pub fn generate_contentstore(
    root: &Path,
    seed: u64,
    total_bytes: u64,
) -> std::io::Result<Generated> {
    let vocabulary = Vocabulary::new(seed);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut done = Generated::default();
    // Earlier documents that may get new versions: class and text.
    let mut previous: Vec<(Class, Vec<u8>)> = Vec::new();
    let mut minute = 0u32;
    while done.bytes < total_bytes {
        let dir = crate::minute_dir(root, minute)?;
        for _ in 0..rng.gen_range(1..12) {
            let len = crate::lognormal(&mut rng, 60_000.0, 1.5, 40 << 20) as usize;
            let (class, text) = if rng.gen_ratio(1, 5) && !previous.is_empty() {
                let (class, mut text) = previous[rng.gen_range(0..previous.len())].clone();
                let at = rng.gen_range(0..text.len().max(1));
                let edit_len = rng.gen_range(20..400);
                let edit = vocabulary.text(&mut rng, edit_len);
                let cut = (at + rng.gen_range(0..200)).min(text.len());
                text.splice(at.min(text.len())..cut, edit);
                (class, text)
            } else {
                let class = draw_class(&mut rng);
                (class, vocabulary.text(&mut rng, text_len(class, len)))
            };
            let data = document(&mut rng, class, &text, len);
            let name = format!("{:032x}.bin", rng.gen::<u128>());
            std::fs::File::create(dir.join(name))?.write_all(&data)?;
            done.files += 1;
            done.bytes += data.len() as u64;
            if !matches!(class, Class::Jpeg | Class::Png) && text.len() < 4 << 20 {
                crate::remember(&mut rng, &mut previous, (class, text));
            }
        }
        minute += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_have_real_headers_and_deflate_streams_that_inflate() {
        let v = Vocabulary::new(1);
        let mut rng = SmallRng::seed_from_u64(2);
        let text = v.text(&mut rng, 50_000);
        let zip = document(&mut rng, Class::Office, &text, 0);
        assert!(zip.starts_with(b"PK\x03\x04") && zip.windows(4).any(|w| w == b"PK\x05\x06"));
        let pdf = document(&mut rng, Class::Pdf, &text, 0);
        assert!(pdf.starts_with(b"%PDF-1.7") && pdf.ends_with(b"%%EOF\n"));
        let jpeg = document(&mut rng, Class::Jpeg, &[], 100_000);
        assert!(jpeg.starts_with(b"\xff\xd8\xff\xe0") && jpeg.ends_with(b"\xff\xd9"));
        let png = document(&mut rng, Class::Png, &[], 100_000);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.ends_with(b"IEND\xaeB`\x82"));
        // The office file's document part inflates back to XML holding the text's words.
        let name = b"word/document.xml";
        let at = zip.windows(name.len()).position(|w| w == name).unwrap() + name.len();
        let packed_len =
            u32::from_le_bytes(zip[at - name.len() - 12..at - name.len() - 8].try_into().unwrap());
        let mut xml = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::DeflateDecoder::new(&zip[at..at + packed_len as usize]),
            &mut xml,
        )
        .unwrap();
        assert!(xml.starts_with(b"<?xml") && xml.windows(20).any(|w| w == &text[100..120]));
    }

    #[test]
    fn the_vocabulary_is_large_and_zipf_shaped() {
        let v = Vocabulary::new(7);
        let mut rng = SmallRng::seed_from_u64(8);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..200_000 {
            *counts.entry(v.word(&mut rng).to_owned()).or_insert(0u32) += 1;
        }
        // Many distinct words, and the most frequent far more frequent than the median.
        assert!(counts.len() > 10_000, "{} distinct words", counts.len());
        let mut freq: Vec<u32> = counts.into_values().collect();
        freq.sort_unstable_by(|a, b| b.cmp(a));
        assert!(freq[0] > 100 * freq[freq.len() / 2], "{} vs {}", freq[0], freq[freq.len() / 2]);
    }

    #[test]
    fn generator_is_deterministic_and_reaches_its_size() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ga = generate_contentstore(a.path(), 5, 3 << 20).unwrap();
        let gb = generate_contentstore(b.path(), 5, 3 << 20).unwrap();
        assert!(ga.bytes >= 3 << 20);
        assert_eq!((ga.files, ga.bytes), (gb.files, gb.bytes));
    }
}
