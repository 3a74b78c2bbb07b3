//! Channel mixing: mono stays mono, stereo stays stereo, anything wider is
//! folded down to stereo.
//!
//! The fold-down uses the ITU-R BS.775 coefficients (centre and surrounds at
//! -3 dB, LFE dropped, as ffmpeg and most players do), then scales each
//! output by the sum of its coefficients, so an output sample can never
//! exceed the loudest input: no clipping, whatever the content.

use symphonia::core::audio::Position;

const MINUS_3DB: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// A fixed matrix from the source layout to the output channels.
pub struct Mixer {
    inputs: usize,
    outputs: usize,
    /// `gains[o * inputs + i]`: weight of input `i` in output `o`.
    gains: Vec<f32>,
}

impl Mixer {
    pub fn new(layout: &[Position]) -> Mixer {
        let inputs = layout.len();
        if inputs <= 2 {
            return Mixer {
                inputs,
                outputs: inputs,
                gains: Vec::new(),
            };
        }
        let mut gains = vec![0.0f32; 2 * inputs];
        for (i, p) in layout.iter().enumerate() {
            let (l, r) = weights(*p);
            gains[i] = l;
            gains[inputs + i] = r;
        }
        for o in 0..2 {
            let row = &mut gains[o * inputs..(o + 1) * inputs];
            let sum: f32 = row.iter().sum();
            if sum > 0.0 {
                row.iter_mut().for_each(|g| *g /= sum);
            }
        }
        Mixer {
            inputs,
            outputs: 2,
            gains,
        }
    }

    /// Channels of the mixed signal (1 or 2).
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Mix interleaved `input` into interleaved `out` (appended). Without a
    /// fold-down the samples are copied as they are.
    pub fn mix(&self, input: &[f32], out: &mut Vec<f32>) {
        if self.gains.is_empty() {
            out.extend_from_slice(input);
            return;
        }
        let (left, right) = self.gains.split_at(self.inputs);
        out.reserve(input.len() / self.inputs * 2);
        for frame in input.chunks_exact(self.inputs) {
            let l: f32 = frame.iter().zip(left).map(|(s, g)| s * g).sum();
            let r: f32 = frame.iter().zip(right).map(|(s, g)| s * g).sum();
            out.push(l);
            out.push(r);
        }
    }
}

/// (left, right) weight of one speaker in a stereo fold-down.
fn weights(p: Position) -> (f32, f32) {
    const LEFT: Position = Position::FRONT_LEFT
        .union(Position::FRONT_LEFT_CENTER)
        .union(Position::FRONT_LEFT_WIDE);
    const RIGHT: Position = Position::FRONT_RIGHT
        .union(Position::FRONT_RIGHT_CENTER)
        .union(Position::FRONT_RIGHT_WIDE);
    const LEFT_BACK: Position = Position::REAR_LEFT
        .union(Position::SIDE_LEFT)
        .union(Position::TOP_FRONT_LEFT)
        .union(Position::TOP_REAR_LEFT)
        .union(Position::TOP_SIDE_LEFT)
        .union(Position::BOTTOM_FRONT_LEFT);
    const RIGHT_BACK: Position = Position::REAR_RIGHT
        .union(Position::SIDE_RIGHT)
        .union(Position::TOP_FRONT_RIGHT)
        .union(Position::TOP_REAR_RIGHT)
        .union(Position::TOP_SIDE_RIGHT)
        .union(Position::BOTTOM_FRONT_RIGHT);
    if LEFT.contains(p) {
        (1.0, 0.0)
    } else if RIGHT.contains(p) {
        (0.0, 1.0)
    } else if LEFT_BACK.contains(p) {
        (MINUS_3DB, 0.0)
    } else if RIGHT_BACK.contains(p) {
        (0.0, MINUS_3DB)
    } else if p.intersects(Position::LFE1.union(Position::LFE2)) {
        (0.0, 0.0)
    } else {
        // Centre speakers (front, rear, top, bottom) go to both sides.
        (MINUS_3DB, MINUS_3DB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn five_one() -> Vec<Position> {
        [
            Position::FRONT_LEFT,
            Position::FRONT_RIGHT,
            Position::FRONT_CENTER,
            Position::LFE1,
            Position::REAR_LEFT,
            Position::REAR_RIGHT,
        ]
        .to_vec()
    }

    #[test]
    fn mono_and_stereo_pass_through() {
        for layout in [
            vec![Position::FRONT_CENTER],
            vec![Position::FRONT_LEFT, Position::FRONT_RIGHT],
        ] {
            let m = Mixer::new(&layout);
            assert_eq!(m.outputs(), layout.len());
            let mut out = Vec::new();
            m.mix(&[0.5, -0.25], &mut out);
            assert_eq!(out, [0.5, -0.25]);
        }
    }

    #[test]
    fn five_one_folds_without_clipping() {
        let m = Mixer::new(&five_one());
        assert_eq!(m.outputs(), 2);
        // Every channel at full scale: the fold-down stays at full scale.
        let mut out = Vec::new();
        m.mix(&[1.0; 6], &mut out);
        assert!(out.iter().all(|s| (s - 1.0).abs() < 1e-6), "{out:?}");
        // Centre alone reaches both sides equally; LFE reaches neither.
        out.clear();
        m.mix(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0], &mut out);
        assert!((out[0] - out[1]).abs() < 1e-6 && out[0] > 0.2);
        out.clear();
        m.mix(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0], &mut out);
        assert_eq!(out, [0.0, 0.0]);
        // The left surround reaches the left side only.
        out.clear();
        m.mix(&[0.0, 0.0, 0.0, 0.0, 1.0, 0.0], &mut out);
        assert!(out[0] > 0.0 && out[1] == 0.0);
    }
}
