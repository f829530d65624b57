//! Writes a small attention-style heatmap to `target/heatmap_demo.svg`.
fn main() -> anyhow::Result<()> {
    let words = ["Your", "journey", "starts", "with", "one", "step"];
    let mut rows = Vec::new();
    for i in 0..6 {
        let mut r: Vec<f64> = (0..6)
            .map(|j| if j <= i { 1.0 / (i + 1) as f64 } else { 0.0 })
            .collect();
        r[0] += 0.0;
        rows.push(r);
    }
    llm_core::plot::Heatmap::new("Causal attention weights", &rows)
        .row_labels(&words)
        .col_labels(&words)
        .axis_labels("keys", "queries")
        .save("target/heatmap_demo.svg")?;
    println!("wrote target/heatmap_demo.svg");
    Ok(())
}
