//! Chapter 2's simple tokenizers on the-verdict, with the book's numbers.

mod common;

use llm_core::text::tokenizer::simple::{split_text, vocab_from_text};
use llm_core::text::tokenizer::{SimpleTokenizerV1, SimpleTokenizerV2, Tokenizer, TokenizerError};

#[test]
fn verdict_preprocessing_matches_the_book() {
    let text = common::read("the-verdict.txt");
    assert_eq!(text.chars().count(), 20479);
    let tokens = split_text(&text);
    assert_eq!(tokens.len(), 4690);
    assert_eq!(
        tokens[..30],
        [
            "I", "HAD", "always", "thought", "Jack", "Gisburn", "rather", "a", "cheap", "genius",
            "--", "though", "a", "good", "fellow", "enough", "--", "so", "it", "was", "no",
            "great", "surprise", "to", "me", "to", "hear", "that", ",", "in"
        ]
    );
}

#[test]
fn verdict_vocabulary_sizes_are_the_books() {
    let text = common::read("the-verdict.txt");
    let vocab = vocab_from_text(&text);
    assert_eq!(vocab.len(), 1130);
    // the book prints the first 51 entries: ("!", 0) ... ("Her", 49), ("Hermia", 50)
    assert_eq!(vocab[0], "!");
    assert_eq!(vocab[49..51], ["Her", "Hermia"]);
    assert_eq!(SimpleTokenizerV1::from_text(&text).vocab_size(), 1130);
    let v2 = SimpleTokenizerV2::from_text(&text);
    assert_eq!(v2.vocab_size(), 1132);
    assert_eq!(
        v2.tokens()[1127..],
        ["younger", "your", "yourself", "<|endoftext|>", "<|unk|>"]
    );
}

#[test]
fn v1_round_trips_a_passage_of_the_verdict() {
    let text = common::read("the-verdict.txt");
    let tokenizer = SimpleTokenizerV1::from_text(&text);
    let passage = "\"It's the last he painted, you know,\" \
                   Mrs. Gisburn said with pardonable pride.";
    let ids = tokenizer.encode(passage).unwrap();
    assert_eq!(
        ids,
        [
            1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108, 754, 793,
            7
        ]
    );
    assert_eq!(
        tokenizer.decode(&ids).unwrap(),
        "\" It' s the last he painted, you know,\" Mrs. Gisburn said with pardonable pride."
    );
    // every token of the text round-trips through its id
    let all = tokenizer.encode(&text).unwrap();
    assert_eq!(all.len(), 4690);
    assert_eq!(
        tokenizer.encode(&tokenizer.decode(&all).unwrap()).unwrap(),
        all
    );
}

#[test]
fn v1_names_the_unknown_word() {
    let text = common::read("the-verdict.txt");
    let tokenizer = SimpleTokenizerV1::from_text(&text);
    let err = tokenizer.encode("Hello, do you like tea?").unwrap_err();
    assert!(matches!(&err, TokenizerError::UnknownToken { token, .. } if token == "Hello"));
    assert!(err.to_string().contains("\"Hello\""), "{err}");
}

#[test]
fn v2_maps_unknown_words_to_unk_with_the_books_ids() {
    let text = common::read("the-verdict.txt");
    let tokenizer = SimpleTokenizerV2::from_text(&text);
    let text1 = "Hello, do you like tea?";
    let text2 = "In the sunlit terraces of the palace.";
    let joined = [text1, text2].join(" <|endoftext|> ");
    assert_eq!(
        joined,
        "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    );
    let ids = tokenizer.encode(&joined).unwrap();
    assert_eq!(
        ids,
        [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    );
    assert_eq!(
        tokenizer.decode(&ids).unwrap(),
        "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."
    );
    assert_eq!(tokenizer.token_to_id("<|endoftext|>"), Some(1130));
    assert_eq!(tokenizer.id_to_token(1131).as_deref(), Some("<|unk|>"));
}
