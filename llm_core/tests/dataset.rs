//! The sliding-window data set and loader of §2.6, on the-verdict, with the
//! book's numbers.

mod common;

use llm_core::tch::Tensor;
use llm_core::text::dataset::{create_dataloader_v1, DatasetError, GptDatasetV1};

fn rows(t: &Tensor) -> Vec<Vec<i64>> {
    Vec::<Vec<i64>>::try_from(t).unwrap()
}

#[test]
fn batch_one_stride_one_is_the_books_first_two_batches() {
    let _rng = common::rng_lock();
    let text = common::read("the-verdict.txt");
    let loader = create_dataloader_v1(&text, 1, 4, 1, false, false).unwrap();
    assert_eq!(loader.len(), 5145 - 4);
    let batches = loader.epoch();
    let (x0, y0) = &batches[0];
    assert_eq!(rows(x0), [[40, 367, 2885, 1464]]);
    assert_eq!(rows(y0), [[367, 2885, 1464, 1807]]);
    let (x1, y1) = &batches[1];
    assert_eq!(rows(x1), [[367, 2885, 1464, 1807]]);
    assert_eq!(rows(y1), [[2885, 1464, 1807, 3619]]);
}

#[test]
fn batch_eight_stride_four_has_no_overlap() {
    let _rng = common::rng_lock();
    let text = common::read("the-verdict.txt");
    let loader = create_dataloader_v1(&text, 8, 4, 4, false, false).unwrap();
    let batches = loader.epoch();
    let (x, y) = &batches[0];
    assert_eq!(x.size(), [8, 4]);
    assert_eq!(x.kind(), llm_core::tch::Kind::Int64);
    let x = rows(x);
    assert_eq!(x[0], [40, 367, 2885, 1464]);
    assert_eq!(x[1], [1807, 3619, 402, 271]);
    // the first 20 ids of the text are the first five rows
    let first20: Vec<i64> = common::ids_at(&["the_verdict", "first_20_ids"])
        .into_iter()
        .map(i64::from)
        .collect();
    assert_eq!(x[..5].concat(), first20);
    let y = rows(y);
    assert_eq!(y[..4].concat(), first20[1..17]);
}

#[test]
fn chapter_five_split_gives_the_books_batch_counts() {
    let _rng = common::rng_lock();
    let text = common::read("the-verdict.txt");
    let split = (0.9 * text.len() as f64) as usize;
    assert_eq!(split, 18431);
    llm_core::tch::manual_seed(123);
    let train = create_dataloader_v1(&text[..split], 2, 256, 256, true, true).unwrap();
    let val = create_dataloader_v1(&text[split..], 2, 256, 256, false, false).unwrap();
    assert_eq!(train.len(), 9);
    assert_eq!(val.len(), 1);
    let tokens: i64 = train.epoch().iter().map(|(x, _)| x.numel() as i64).sum();
    assert_eq!(tokens, 4608);
    let tokens: i64 = val.epoch().iter().map(|(x, _)| x.numel() as i64).sum();
    assert_eq!(tokens, 512);
}

#[test]
fn shuffled_epochs_repeat_after_the_same_seed() {
    let _rng = common::rng_lock();
    let text = common::read("the-verdict.txt");
    let loader = create_dataloader_v1(&text, 4, 16, 16, true, false).unwrap();
    let epoch = || {
        loader
            .epoch()
            .iter()
            .map(|(x, _)| rows(x))
            .collect::<Vec<_>>()
    };
    llm_core::tch::manual_seed(123);
    let (a1, a2) = (epoch(), epoch());
    llm_core::tch::manual_seed(123);
    let (b1, b2) = (epoch(), epoch());
    assert_eq!(a1, b1);
    assert_eq!(a2, b2);
    assert_ne!(a1, a2, "each epoch reshuffles");
    // every window exactly once per epoch
    let unshuffled = GptDatasetV1::new(&text, common::gpt2(), 16, 16).unwrap();
    let mut expected = rows(&unshuffled.input_ids);
    let mut got: Vec<Vec<i64>> = a1.concat();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn text_too_short_is_an_error_not_an_empty_dataset() {
    let err = create_dataloader_v1("Hello, world", 1, 4, 1, false, false).unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::TooShort {
                tokens: 3,
                max_length: 4
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("3 tokens"), "{err}");
    let err = create_dataloader_v1("Hello, world", 0, 2, 1, false, false).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}

#[test]
fn dataset_items_are_the_books_getitem() {
    let text = common::read("the-verdict.txt");
    let d = GptDatasetV1::new(&text, common::gpt2(), 4, 1).unwrap();
    assert_eq!(d.len(), 5141);
    let (x, y) = d.get(5140);
    let last = common::ids_at(&["the_verdict", "last_10_ids"]);
    let last: Vec<i64> = last.into_iter().map(i64::from).collect();
    assert_eq!(Vec::<i64>::try_from(&x).unwrap(), last[5..9]);
    assert_eq!(Vec::<i64>::try_from(&y).unwrap(), last[6..10]);
}
