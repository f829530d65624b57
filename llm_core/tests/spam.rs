//! Chapter 6.2–6.3: reading the SMS Spam Collection as pandas does, and the
//! book's seeded balancing and split, checked row for row against the
//! book's CSV files in `shared/data/sms_spam_collection/`.

mod common;

use llm_core::finetune::spam::{
    create_balanced_dataset, random_split, read_sms_collection, read_split_csv, Quoting,
    SpamDataset, PAD_TOKEN_ID,
};
use llm_core::text::tokenizer::Gpt2Tokenizer;

fn dir() -> std::path::PathBuf {
    common::data_dir().join("sms_spam_collection")
}

#[test]
fn pandas_sees_5572_messages_a_line_reader_5574() {
    let path = dir().join("SMSSpamCollection.tsv");
    let messages = read_sms_collection(&path, Quoting::Pandas).unwrap();
    assert_eq!(messages.len(), 5572);
    assert_eq!(messages.iter().filter(|m| m.label == 0).count(), 4825);
    assert_eq!(messages.iter().filter(|m| m.label == 1).count(), 747);
    let lines = read_sms_collection(&path, Quoting::None).unwrap();
    assert_eq!(lines.len(), 5574);
    assert_eq!(lines.iter().filter(|m| m.label == 0).count(), 4827);
}

#[test]
fn seeded_split_is_the_books_row_for_row() {
    let messages =
        read_sms_collection(dir().join("SMSSpamCollection.tsv"), Quoting::Pandas).unwrap();
    let balanced = create_balanced_dataset(&messages, 123);
    assert_eq!(balanced.len(), 1494);
    let (train, validation, test) = random_split(&balanced, 0.7, 0.1, 123);
    for (name, ours) in [
        ("train.csv", &train),
        ("validation.csv", &validation),
        ("test.csv", &test),
    ] {
        let book = read_split_csv(dir().join(name)).unwrap();
        assert_eq!(ours.len(), book.len(), "{name}");
        for (i, (a, b)) in ours.iter().zip(&book).enumerate() {
            assert_eq!(a, b, "{name} row {i}");
        }
    }
    assert_eq!(train.iter().filter(|m| m.label == 1).count(), 517);
}

#[test]
fn longest_training_message_is_120_tokens() {
    let tokenizer = Gpt2Tokenizer::from_files(
        common::data_dir().join("gpt2/encoder.json"),
        common::data_dir().join("gpt2/vocab.bpe"),
    )
    .unwrap();
    let train = read_split_csv(dir().join("train.csv")).unwrap();
    let train_dataset = SpamDataset::new(&train, &tokenizer, None, PAD_TOKEN_ID).unwrap();
    assert_eq!(train_dataset.max_length, 120);
    assert_eq!(train_dataset.encoded_texts.size(), [1045, 120]);
    let val = read_split_csv(dir().join("validation.csv")).unwrap();
    let val_dataset = SpamDataset::new(
        &val,
        &tokenizer,
        Some(train_dataset.max_length),
        PAD_TOKEN_ID,
    )
    .unwrap();
    assert_eq!(val_dataset.encoded_texts.size(), [149, 120]);
    let loader = train_dataset.into_loader(8, true, true);
    assert_eq!(loader.len(), 130);
}
