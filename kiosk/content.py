"""Fixed texts the kiosk shows: the ward's slogans and the code of conduct.

The wording of "4 xin, 4 luôn, 5 không" is the ward plan's (shared/seeds), verbatim.
"""

from __future__ import annotations

SLOGANS: list[tuple[str, list[str]]] = [
    ("4 xin", ["Xin chào", "Xin lỗi", "Xin cảm ơn", "Xin phép"]),
    ("4 luôn", ["Luôn mỉm cười", "Luôn nhẹ nhàng", "Luôn lắng nghe", "Luôn giúp đỡ"]),
    ("5 không", [
        "Không cửa quyền, hách dịch, gây khó khăn, phiền hà",
        "Không quan liêu, vô cảm, vô trách nhiệm",
        "Không tham nhũng, lãng phí, lợi ích nhóm",
        "Không xu nịnh, chạy chọt, gian dối",
        "Không lợi dụng chức vụ, quyền hạn trong thực thi công vụ",
    ]),
]

MOTTO = "Chính quyền thân thiện – Vì nhân dân phục vụ"

CODE_OF_CONDUCT_TITLE = "Quy tắc ứng xử của người làm việc tại Bộ phận Một cửa"
CODE_OF_CONDUCT: list[str] = [
    "Mặc trang phục lịch sự, đeo thẻ công chức và đặt biển chức danh tại nơi làm việc.",
    "Chào hỏi, xin phép khi tiếp nhận giấy tờ; cảm ơn khi người dân phối hợp; xin lỗi khi có sai sót hoặc chậm trễ.",
    "Lắng nghe ý kiến, hướng dẫn tận tình, đầy đủ và một lần; đặc biệt quan tâm người cao tuổi, người khuyết tật, phụ nữ mang thai.",
    "Tiếp nhận, giải quyết hồ sơ theo thứ tự; trả kết quả đúng hẹn; khi trễ hẹn phải có văn bản xin lỗi và hẹn lại.",
    "Không yêu cầu thêm giấy tờ ngoài quy định; không nhận tiền, quà hoặc bất kỳ lợi ích nào của người dân.",
    "Không hút thuốc, uống rượu bia, làm việc riêng hay bỏ vị trí trong giờ tiếp dân.",
    "Công khai số điện thoại đường dây nóng; tiếp nhận và trả lời góp ý, phản ánh của người dân.",
]
