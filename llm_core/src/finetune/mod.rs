//! Chapters 6 and 7 and appendix E: fine-tuning for classification and for following instructions, in full or with LoRA; then preference tuning (DPO).

pub mod classifier;
pub mod dpo;
pub mod instruct;
pub mod lora;
pub mod spam;
