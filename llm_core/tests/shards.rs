//! Pre-tokenized shards: the same batches as chapter 2's loader over the same
//! ids, and the parallel encoder giving the ids of the sequential one.

mod common;

use llm_core::tch::{self, Device, Kind, Tensor};
use llm_core::text::dataset::GptDatasetV1;
use llm_core::text::loader::DataLoader;
use llm_core::text::shards::{encode_parallel, write_shard, ShardLoader, TokenShard};
use llm_core::text::tokenizer::{Gpt2Tokenizer, Tokenizer};

#[test]
fn shard_batches_equal_the_book_loader_batches() {
    let _lock = common::rng_lock();
    tch::manual_seed(7);
    let ids: Vec<u32> =
        Vec::<i64>::try_from(Tensor::randint(50257, [1000], (Kind::Int64, Device::Cpu)))
            .unwrap()
            .into_iter()
            .map(|i| i as u32)
            .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.bin");
    write_shard(&path, &ids).unwrap();
    let shard = std::sync::Arc::new(TokenShard::open(&path).unwrap());
    assert_eq!(shard.ids(0..shard.len()), ids);
    for (range, stride, shuffle) in [
        (0..900, 16, true),
        (900..1000, 16, false),
        (3..700, 5, true),
    ] {
        tch::manual_seed(123);
        let book = GptDatasetV1::from_ids(&ids[range.clone()], 16, stride)
            .unwrap()
            .into_loader(4, shuffle, shuffle);
        let a: Vec<_> = (0..2).flat_map(|_| book.batches()).collect();
        let after_a = Tensor::rand([1], (Kind::Float, Device::Cpu));
        tch::manual_seed(123);
        let ours = ShardLoader::new(shard.clone(), range, 16, stride, 4)
            .unwrap()
            .shuffle(shuffle)
            .drop_last(shuffle);
        assert_eq!(ours.num_batches(), book.num_batches());
        let b: Vec<_> = (0..2)
            .flat_map(|_| ours.batch_iter().collect::<Vec<_>>())
            .collect();
        assert!(Tensor::rand([1], (Kind::Float, Device::Cpu)).equal(&after_a));
        assert_eq!(a.len(), b.len());
        for ((x1, y1), (x2, y2)) in a.iter().zip(&b) {
            assert!(x1.equal(x2) && y1.equal(y2));
        }
    }
    let err = ShardLoader::new(shard.clone(), 990..1000, 16, 16, 4).unwrap_err();
    assert!(
        err.to_string()
            .contains("hold 10 tokens: at least max_length + 1 = 17"),
        "{err}"
    );
    let err = ShardLoader::new(shard, 0..2000, 16, 16, 4).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
}

#[test]
fn parallel_encoding_gives_the_sequential_ids() {
    let tokenizer = Gpt2Tokenizer::gpt2().unwrap();
    let text = llm_core::data::read_to_string("tinyshakespeare.txt").unwrap();
    let text = &text[..text.len() / 4];
    let ids = tokenizer.encode(text).unwrap();
    for threads in [1, 2, 3, 8] {
        assert_eq!(
            encode_parallel(&tokenizer, text, threads).unwrap(),
            ids,
            "{threads} threads"
        );
    }
    // the crate's own pipeline (from tokenizer.json) agrees with the fast path
    let hf =
        Gpt2Tokenizer::from_tokenizer_json(common::data_dir().join("gpt2/tokenizer.json")).unwrap();
    let piece = &text[..20_000];
    assert_eq!(hf.encode(piece).unwrap(), tokenizer.encode(piece).unwrap());
}
