//! Chapter 5 and appendix D: the loss, the optimizer, the training loops and their checkpoints.

pub mod checkpoint;
pub mod history;
pub mod loss;
pub mod optim;
pub mod pretrain;
pub mod speed;
