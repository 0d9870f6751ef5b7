// heritage explorer: the threshold slider shows its value and reloads the page when moved.
document.addEventListener("DOMContentLoaded", () => {
  const slider = document.getElementById("threshold");
  const shown = document.getElementById("threshold-value");
  if (!slider) return;
  slider.addEventListener("input", () => { shown.textContent = Number(slider.value).toFixed(2); });
  slider.addEventListener("change", () => slider.form.submit());
  for (const select of slider.form.querySelectorAll("select")) {
    select.addEventListener("change", () => slider.form.submit());
  }
});
