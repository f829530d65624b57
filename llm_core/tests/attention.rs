//! Chapter 3: the attention layers against the book's printed numbers, the
//! PyTorch creation order and names, causality, and the fused variant.

mod common;
use common::rng_lock;

use std::collections::BTreeSet;

use llm_core::model::attention::{
    causal_mask, inputs_your_journey, simplified_attention, AttentionError, CausalAttention,
    Dropout, MhaSdpa, MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttentionV1,
    SelfAttentionV2,
};
use llm_core::model::init;
use llm_core::tch::nn::{self, Module, ModuleT};
use llm_core::tch::{self, Device, Kind, Tensor};

fn batch_of_two() -> Tensor {
    Tensor::stack(&[inputs_your_journey(), inputs_your_journey()], 0)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    let n = t.size()[0];
    (0..n)
        .map(|i| Vec::<f32>::try_from(t.get(i)).unwrap())
        .collect()
}

/// Every element within `tol` of the book's 4-decimal printout.
fn assert_close(got: &Tensor, expected: &[&[f32]], tol: f32) {
    let got = rows(got);
    assert_eq!(got.len(), expected.len(), "rows: {got:?}");
    for (g, e) in got.iter().zip(expected) {
        assert_eq!(g.len(), e.len(), "{got:?}");
        for (a, b) in g.iter().zip(e.iter()) {
            assert!((a - b).abs() <= tol, "got {got:?}, expected {expected:?}");
        }
    }
}

fn names(vs: &nn::VarStore) -> BTreeSet<String> {
    vs.variables().into_keys().collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn simplified_attention_matches_book_3_3() {
    let context = simplified_attention(&inputs_your_journey());
    assert_eq!(context.size(), [6, 3]);
    assert_close(
        &context,
        &[
            &[0.4421, 0.5931, 0.5790],
            &[0.4419, 0.6515, 0.5683],
            &[0.4431, 0.6496, 0.5671],
            &[0.4304, 0.6298, 0.5510],
            &[0.4671, 0.5910, 0.5266],
            &[0.4177, 0.6503, 0.5645],
        ],
        1e-4,
    );
    // batched input gives the same rows per batch element
    let batched = simplified_attention(&batch_of_two());
    assert_eq!(batched.size(), [2, 6, 3]);
    assert!(max_abs_diff(&batched.get(1), &context) < 1e-6);
}

#[test]
fn self_attention_v1_matches_book_3_4_with_seed_123() {
    let _rng = rng_lock();
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let sa_v1 = SelfAttentionV1::new(vs.root(), 3, 2);
    let context = sa_v1.forward(&inputs_your_journey());
    assert_eq!(context.size(), [6, 2]);
    assert_close(
        &context,
        &[
            &[0.2996, 0.8053],
            &[0.3061, 0.8210],
            &[0.3058, 0.8203],
            &[0.2948, 0.7939],
            &[0.2927, 0.7891],
            &[0.2990, 0.8040],
        ],
        1e-4,
    );
    // raw [d_in, d_out] parameters, drawn by torch.rand in the order query, key, value
    assert_eq!(
        names(&vs),
        ["W_key", "W_query", "W_value"].map(String::from).into()
    );
    tch::manual_seed(123);
    let q = Tensor::rand([3, 2], (Kind::Float, Device::Cpu));
    let k = Tensor::rand([3, 2], (Kind::Float, Device::Cpu));
    let v = Tensor::rand([3, 2], (Kind::Float, Device::Cpu));
    assert!(sa_v1.w_query.equal(&q) && sa_v1.w_key.equal(&k) && sa_v1.w_value.equal(&v));
    assert!(sa_v1.w_query.requires_grad());
}

#[test]
fn self_attention_v2_matches_book_3_4_with_seed_789() {
    let _rng = rng_lock();
    tch::manual_seed(789);
    let vs = nn::VarStore::new(Device::Cpu);
    let sa_v2 = SelfAttentionV2::new(vs.root(), 3, 2, false);
    let context = sa_v2.forward(&inputs_your_journey());
    assert_eq!(context.size(), [6, 2]);
    assert_close(
        &context,
        &[
            &[-0.0739, 0.0713],
            &[-0.0748, 0.0703],
            &[-0.0749, 0.0702],
            &[-0.0760, 0.0685],
            &[-0.0763, 0.0679],
            &[-0.0754, 0.0693],
        ],
        1e-4,
    );
    assert_eq!(
        names(&vs),
        ["W_key.weight", "W_query.weight", "W_value.weight"]
            .map(String::from)
            .into()
    );
    let vs = nn::VarStore::new(Device::Cpu);
    let with_bias = SelfAttentionV2::new(vs.root() / "sa", 3, 2, true);
    assert_eq!(with_bias.forward(&batch_of_two()).size(), [2, 6, 2]);
    assert!(names(&vs).contains("sa.W_value.bias"));
}

#[test]
fn causal_attention_and_wrapper_match_book_3_5_and_3_6_1() {
    let _rng = rng_lock();
    let head: [&[f32]; 6] = [
        &[-0.4519, 0.2216],
        &[-0.5874, 0.0058],
        &[-0.6300, -0.0632],
        &[-0.5675, -0.0843],
        &[-0.5526, -0.0981],
        &[-0.5299, -0.1081],
    ];
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let ca = CausalAttention::new(vs.root(), 3, 2, 6, 0.0, false);
    let context = ca.forward_t(&batch_of_two(), true);
    assert_eq!(context.size(), [2, 6, 2]);
    assert_close(&context.get(0), &head, 1e-4);
    assert_close(&context.get(1), &head, 1e-4);

    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let mha = MultiHeadAttentionWrapper::new(vs.root(), 3, 2, 6, 0.0, 2, false);
    let context = mha.forward_t(&batch_of_two(), false);
    assert_eq!(context.size(), [2, 6, 4]);
    assert_close(
        &context.get(1),
        &[
            &[-0.4519, 0.2216, 0.4772, 0.1063],
            &[-0.5874, 0.0058, 0.5891, 0.3257],
            &[-0.6300, -0.0632, 0.6202, 0.3860],
            &[-0.5675, -0.0843, 0.5478, 0.3589],
            &[-0.5526, -0.0981, 0.5321, 0.3428],
            &[-0.5299, -0.1081, 0.5077, 0.3493],
        ],
        1e-4,
    );
    let expected: BTreeSet<String> = (0..2)
        .flat_map(|i| ["W_query", "W_key", "W_value"].map(|m| format!("heads.{i}.{m}.weight")))
        .collect();
    assert_eq!(names(&vs), expected);
}

#[test]
fn multi_head_attention_matches_book_3_6_2() {
    let _rng = rng_lock();
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let mha = MultiHeadAttention::new(vs.root(), 3, 2, 6, 0.0, 2, false).unwrap();
    let context = mha.forward_t(&batch_of_two(), true);
    assert_eq!(context.size(), [2, 6, 2]);
    let book: [&[f32]; 6] = [
        &[0.3190, 0.4858],
        &[0.2943, 0.3897],
        &[0.2856, 0.3593],
        &[0.2693, 0.3873],
        &[0.2639, 0.3928],
        &[0.2575, 0.4028],
    ];
    assert_close(&context.get(0), &book, 1e-4);
    assert_close(&context.get(1), &book, 1e-4);
    assert_eq!(
        names(&vs),
        [
            "W_key.weight",
            "W_query.weight",
            "W_value.weight",
            "out_proj.bias",
            "out_proj.weight"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(mha.parameters().len(), 5);
}

#[test]
fn multi_head_attention_draws_query_key_value_then_out_proj() {
    let _rng = rng_lock();
    let (d_in, d_out) = (5, 4);
    tch::manual_seed(42);
    let vs = nn::VarStore::new(Device::Cpu);
    let mha = MultiHeadAttention::new(vs.root() / "att", d_in, d_out, 8, 0.1, 2, true).unwrap();
    tch::manual_seed(42);
    let bound = |fan_in| {
        (
            init::linear_weight_bound(fan_in),
            init::linear_bias_bound(fan_in),
        )
    };
    let (w_in, b_in) = bound(d_in);
    let (w_out, b_out) = bound(d_out);
    for layer in [&mha.w_query, &mha.w_key, &mha.w_value] {
        let w = init::uniform(&[d_out, d_in], -w_in, w_in);
        let b = init::uniform(&[d_out], -b_in, b_in);
        assert!(layer.ws.equal(&w));
        assert!(layer.bs.as_ref().unwrap().equal(&b));
    }
    let w = init::uniform(&[d_out, d_out], -w_out, w_out);
    let b = init::uniform(&[d_out], -b_out, b_out);
    assert!(mha.out_proj.ws.equal(&w));
    assert!(mha.out_proj.bs.as_ref().unwrap().equal(&b));
    assert!(names(&vs).contains("att.W_query.bias"));
}

#[test]
fn heads_must_divide_d_out() {
    let vs = nn::VarStore::new(Device::Cpu);
    let err = MultiHeadAttention::new(vs.root(), 4, 6, 8, 0.0, 4, false).unwrap_err();
    assert_eq!(
        err,
        AttentionError::HeadsDoNotDivide {
            d_out: 6,
            num_heads: 4
        }
    );
    assert!(err.to_string().contains("num_heads (4)"));
    assert!(MhaSdpa::new(vs.root(), 4, 6, 8, 0.0, 0, false).is_err());
}

#[test]
fn mask_is_strictly_upper_triangular() {
    let mask = causal_mask(4, Device::Cpu);
    assert_eq!(mask.kind(), Kind::Bool);
    let m: Vec<i64> = Vec::try_from(mask.to_kind(Kind::Int64).flatten(0, -1)).unwrap();
    assert_eq!(m, [0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
}

/// Changing token `t` must leave the outputs at positions `< t` unchanged.
fn assert_causal(layer: &dyn ModuleT, d_in: i64) {
    let x = Tensor::randn([2, 7, d_in], (Kind::Float, Device::Cpu));
    let y = layer.forward_t(&x, false);
    for t in [6, 3, 1] {
        let x2 = x.copy();
        x2.narrow(1, t, 7 - t)
            .copy_(&Tensor::randn([2, 7 - t, d_in], (Kind::Float, Device::Cpu)));
        let y2 = layer.forward_t(&x2, false);
        assert_eq!(max_abs_diff(&y.narrow(1, 0, t), &y2.narrow(1, 0, t)), 0.0);
        assert!(max_abs_diff(&y.narrow(1, t, 1), &y2.narrow(1, t, 1)) > 1e-4);
    }
}

#[test]
fn later_tokens_never_change_earlier_outputs() {
    let _rng = rng_lock();
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let mha = MultiHeadAttention::new(vs.root(), 12, 8, 10, 0.0, 4, true).unwrap();
    assert_causal(&mha, 12);
    assert_causal(&MhaSdpa::from(&mha), 12);
    assert_causal(
        &CausalAttention::new(vs.root() / "ca", 12, 8, 10, 0.0, false),
        12,
    );
    assert_causal(
        &MultiHeadAttentionWrapper::new(vs.root() / "w", 12, 4, 10, 0.0, 2, false),
        12,
    );
}

#[test]
fn sdpa_variant_equals_multi_head_attention() {
    let _rng = rng_lock();
    for qkv_bias in [false, true] {
        tch::manual_seed(123);
        let vs = nn::VarStore::new(Device::Cpu);
        let mha = MultiHeadAttention::new(vs.root(), 48, 64, 32, 0.0, 8, qkv_bias).unwrap();
        // the same seed builds the same weights under the same names
        tch::manual_seed(123);
        let vs2 = nn::VarStore::new(Device::Cpu);
        let sdpa = MhaSdpa::new(vs2.root(), 48, 64, 32, 0.0, 8, qkv_bias).unwrap();
        assert_eq!(names(&vs), names(&vs2));
        for (a, b) in mha.parameters().into_iter().zip(sdpa.parameters()) {
            assert!(a.equal(b));
        }
        let shared = MhaSdpa::from(&mha);
        let x = Tensor::randn([3, 32, 48], (Kind::Float, Device::Cpu));
        let expected = mha.forward_t(&x, true); // dropout 0: train mode changes nothing
        for layer in [&sdpa, &shared] {
            for train in [false, true] {
                let got = layer.forward_t(&x, train);
                assert_eq!(got.size(), [3, 32, 64]);
                let diff = max_abs_diff(&got, &expected);
                assert!(
                    diff < 1e-6,
                    "qkv_bias {qkv_bias}, train {train}: diff {diff}"
                );
            }
        }
        // shorter inputs than the context length
        let x = x.narrow(1, 0, 5);
        assert!(max_abs_diff(&mha.forward_t(&x, false), &shared.forward_t(&x, false)) < 1e-6);
    }
}

#[test]
fn sdpa_gradients_match_multi_head_attention() {
    let _rng = rng_lock();
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let mha = MultiHeadAttention::new(vs.root(), 16, 16, 12, 0.0, 4, false).unwrap();
    let sdpa = MhaSdpa::from(&mha);
    let x = Tensor::randn([2, 12, 16], (Kind::Float, Device::Cpu));
    let grads = |layer: &dyn ModuleT| {
        for p in mha.parameters() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        layer
            .forward_t(&x, true)
            .pow_tensor_scalar(2)
            .sum(Kind::Float)
            .backward();
        mha.w_query.ws.grad().copy()
    };
    let g1 = grads(&mha);
    let g2 = grads(&sdpa);
    assert!(max_abs_diff(&g1, &g2) < 1e-5);
}

#[test]
fn dropout_on_attention_weights_draws_like_pytorch() {
    let _rng = rng_lock();
    tch::manual_seed(123);
    let vs = nn::VarStore::new(Device::Cpu);
    let ca = CausalAttention::new(vs.root(), 3, 2, 6, 0.5, false);
    let x = batch_of_two();
    // evaluation mode: no dropout, no draws
    let eval = ca.forward_t(&x, false);
    tch::manual_seed(5);
    let train = ca.forward_t(&x, true);
    assert!(max_abs_diff(&eval, &train) > 1e-3);
    // the same computation by hand, dropping with the same seed
    let keys = ca.w_key.forward(&x);
    let queries = ca.w_query.forward(&x);
    let values = ca.w_value.forward(&x);
    let scores = queries
        .matmul(&keys.transpose(1, 2))
        .masked_fill(&causal_mask(6, Device::Cpu), f64::NEG_INFINITY);
    let weights = (scores / 2f64.sqrt()).softmax(-1, Kind::Float);
    tch::manual_seed(5);
    let by_hand = weights.dropout(0.5, true).matmul(&values);
    assert!(max_abs_diff(&train, &by_hand) == 0.0);

    let d = Dropout::new(0.5);
    let ones = Tensor::ones([6, 6], (Kind::Float, Device::Cpu));
    assert!(d.forward_t(&ones, false).equal(&ones));
    let dropped = d.forward_t(&ones, true);
    let kept = dropped.ne(0.0).sum(Kind::Int64).int64_value(&[]);
    assert!(kept > 0 && kept < 36);
    assert!(
        dropped
            .eq(0.0)
            .logical_or(&dropped.eq(2.0))
            .all()
            .int64_value(&[])
            == 1
    );
}

#[test]
#[should_panic(expected = "more than the context length")]
fn inputs_longer_than_the_context_are_rejected() {
    let _rng = rng_lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let mha = MultiHeadAttention::new(vs.root(), 4, 4, 3, 0.0, 2, false).unwrap();
    let _ = mha.forward_t(&Tensor::zeros([1, 4, 4], (Kind::Float, Device::Cpu)), false);
}
