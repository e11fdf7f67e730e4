"""Pictures the screens show: QR codes for online services and the admin charts.

Both are rendered to PNG files in the kiosk's data folder (Kivy shows images; charts
come from matplotlib, not hand-drawn), named by content so they are made once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .ratings import Share

LEVEL_COLOURS = ("#c62828", "#ef6c00", "#9e9e9e", "#7cb342", "#2e7d32")


def qr_png(url: str, folder: Path) -> Path:
    import qrcode

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"qr-{hashlib.sha256(url.encode()).hexdigest()[:16]}.png"
    if not path.exists():
        qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=10, border=2)
        qr.add_data(url)
        qr.make(fit=True)
        tmp = path.with_suffix(".tmp")
        qr.make_image(fill_color="black", back_color="white").save(tmp, format="PNG")
        tmp.replace(path)
    return path


def share_chart(shares: list[Share], title: str, target_pct: int, folder: Path, *, size=(8, 4.5),
                dark: bool = False, scale: float = 1.0) -> Path:
    """Horizontal bars of satisfaction % per group with the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(repr((title, target_pct, size, dark, scale,
                               [(s.key, s.label, s.answers, s.satisfied) for s in shares])).encode()).hexdigest()[:16]
    path = folder / f"chart-{key}.png"
    if path.exists():
        return path
    fg, bg = ("white", "black") if dark else ("#1a1a1a", "white")
    fig, ax = plt.subplots(figsize=size, dpi=int(100 * scale), facecolor=bg)
    ax.set_facecolor(bg)
    labels = [_wrap(s.label) for s in shares] or ["(chưa có đánh giá)"]
    values = [s.pct for s in shares] or [0]
    colours = ["#2e7d32" if s.meets_target else "#c62828" for s in shares] or ["#9e9e9e"]
    bars = ax.barh(labels, values, color=colours)
    ax.axvline(target_pct, color="#1565c0", linestyle="--", linewidth=2, label=f"Mục tiêu {target_pct} %")
    for bar, s in zip(bars, shares):
        inside = bar.get_width() > 60
        ax.text(bar.get_width() - 1 if inside else bar.get_width() + 1, bar.get_y() + bar.get_height() / 2,
                f"{s.pct:.1f} % ({s.answers} phiếu)" if s.answers else "chưa có phiếu", va="center", ha="right" if inside else "left",
                color="white" if inside else fg, fontsize=11, fontweight="bold")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("Tỷ lệ hài lòng (%)", color=fg)
    ax.set_title(title, color=fg, fontsize=14)
    ax.tick_params(colors=fg)
    for spine in ax.spines.values():
        spine.set_color(fg)
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, facecolor=bg)
    plt.close(fig)
    tmp.replace(path)
    return path


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines[:3])
