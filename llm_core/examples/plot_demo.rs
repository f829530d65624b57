//! Writes the book's loss plot with made-up numbers to `target/plot_demo.svg`.
fn main() -> anyhow::Result<()> {
    let epochs: Vec<f64> = (0..=10).map(f64::from).collect();
    let tokens: Vec<f64> = epochs.iter().map(|e| e * 4608.0).collect();
    let train: Vec<f64> = epochs
        .iter()
        .map(|e| 10.0 * (-0.35 * e).exp() + 0.3)
        .collect();
    let val: Vec<f64> = epochs
        .iter()
        .map(|e| 6.0 + 4.0 * (-0.6 * e).exp())
        .collect();
    let chart = llm_core::plot::loss_plot(&epochs, &tokens, &train, &val);
    chart.save("target/plot_demo.svg")?;
    println!("wrote target/plot_demo.svg");
    Ok(())
}
