//! Cover art: images resized for listings (a grid of album covers wants
//! 300 px, not the 3000 px scan a file may carry).
//!
//! The only module that touches the `image` crate. Cover bytes come from
//! files and from other members, so decoding is bounded: dimensions and
//! the decoder's allocations are capped before any pixel is read.
//!
//! Must never: decode without limits, or write anywhere (the node caches
//! what it returns).

use std::io::Cursor;

/// Smallest and largest side a resized cover may be asked for.
pub const SIZES: std::ops::RangeInclusive<u32> = 8..=2048;
/// Largest source image decoded (either side), and the decoder's memory.
const MAX_SIDE: u32 = 12_000;
const MAX_ALLOC: u64 = 256 << 20;

/// Why a cover could not be resized.
#[derive(Debug, thiserror::Error)]
pub enum ArtworkError {
    /// Not a size we serve.
    #[error("cover size must be 8..=2048 pixels (`SIZES`), not {0}")]
    Size(u32),
    /// The image does not decode (or is beyond the limits).
    #[error("cannot decode the cover image: {0}")]
    Decode(String),
    /// Encoding the result failed.
    #[error("cannot encode the resized cover: {0}")]
    Encode(String),
}

/// `data` scaled so its longest side is at most `size` pixels (aspect
/// kept, never enlarged), as a JPEG. Returns the MIME type and the bytes.
pub fn resize(data: &[u8], size: u32) -> Result<(&'static str, Vec<u8>), ArtworkError> {
    if !SIZES.contains(&size) {
        return Err(ArtworkError::Size(size));
    }
    let mut reader = image::ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| ArtworkError::Decode(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ArtworkError::Decode(e.to_string()))?;
    let img = if img.width().max(img.height()) > size {
        img.resize(size, size, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    img.to_rgb8()
        .write_with_encoder(enc)
        .map_err(|e| ArtworkError::Encode(e.to_string()))?;
    Ok(("image/jpeg", out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn resizes_the_longest_side_and_never_enlarges() {
        let (mime, jpg) = resize(&png(400, 200), 100).unwrap();
        assert_eq!(mime, "image/jpeg");
        let img = image::load_from_memory(&jpg).unwrap();
        assert_eq!((img.width(), img.height()), (100, 50));
        let img = image::load_from_memory(&resize(&png(40, 20), 100).unwrap().1).unwrap();
        assert_eq!((img.width(), img.height()), (40, 20));
    }

    #[test]
    fn refuses_bad_sizes_and_bad_images() {
        assert!(matches!(resize(&png(4, 4), 0), Err(ArtworkError::Size(0))));
        assert!(matches!(
            resize(b"not an image", 100),
            Err(ArtworkError::Decode(_))
        ));
        // A PNG header claiming 100000 x 100000 pixels: refused, not allocated.
        let mut big = png(1, 1);
        big[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        big[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(matches!(resize(&big, 100), Err(ArtworkError::Decode(_))));
    }
}
