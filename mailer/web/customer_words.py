# ruff: noqa: RUF001  (Bulgarian is written in Cyrillic, not in look-alike Latin letters)
"""What the customer's own pages (unsubscribe, preferences, the web forms' answers) say, in
each language we write to customers in. One dict per language, so a translator edits one
place and a test can see that no language misses a line.

The language is picked as mail templates pick their variant: "bg-BG", then "bg", then
English; a customer gets their page in the language their mail came in.
"""

from __future__ import annotations

DEFAULT = "en"

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your email preferences",
        "for_address": "For",
        "unsubscribe": "Unsubscribe from everything",
        "unsubscribed": "You are unsubscribed: you will get no more newsletters, greetings or "
        "invitations from us. Replies about your own questions to support still reach you.",
        "changed_mind": "Changed your mind?",
        "resubscribe": "Subscribe me again",
        "resubscribed": "Welcome back: you are subscribed again, with the choices you had before.",
        "saved": "Your preferences are saved.",
        "choose": "Or choose what you get",
        "marketing": "Newsletters and webinar invitations",
        "relationship": "Birthday greetings",
        "pause": "Take a break",
        "no_pause": "no break",
        "pause_30": "for a month",
        "pause_90": "for three months",
        "save": "Save my preferences",
        "not_valid": "This link is not valid",
        "not_valid_help": "It may have been copied incompletely. Use the unsubscribe link at "
        "the bottom of any of our messages, or reply to one of them and we will take care of it.",
        "questions": "Questions? Write to us at",
        "thanks_inquiry": "Thank you, your message reached us",
        "thanks_inquiry_help": "We have sent a short note to your e-mail address with your "
        "reference. Someone from our team will answer by e-mail.",
        "thanks_subscribe": "Almost done: check your e-mail",
        "thanks_subscribe_help": "We have sent you a message with a link. Open it to confirm "
        "your subscription; until then you get no newsletters from us.",
        "confirm_title": "Confirm your subscription",
        "confirm_help": "One click and you will receive our newsletters and invitations. You "
        "can unsubscribe at any time from the link in every message.",
        "confirm_button": "Yes, subscribe me",
        "subscribed": "You are subscribed. Thank you!",
        "form_problem": "Your message could not be sent",
        "link_expired": "This link has expired",
        "link_expired_help": "Confirmation links are valid for a limited time. Sign up again on "
        "our website and we will send you a new one.",
    },
    "bg": {
        "title": "Настройки за писмата",
        "for_address": "За",
        "unsubscribe": "Отписване от всичко",
        "unsubscribed": "Отписахте се: няма да получавате повече бюлетини, поздравления и "
        "покани от нас. Отговорите на въпросите, които сте ни задали, ще продължат да стигат "
        "до Вас.",
        "changed_mind": "Размислихте ли?",
        "resubscribe": "Абонирайте ме отново",
        "resubscribed": "Добре дошли отново! Абонирани сте с настройките, които имахте преди.",
        "saved": "Настройките Ви са запазени.",
        "choose": "Или изберете какво да получавате",
        "marketing": "Бюлетини и покани за уебинари",
        "relationship": "Поздравления за рождения ден",
        "pause": "Почивка от писмата",
        "no_pause": "без почивка",
        "pause_30": "за един месец",
        "pause_90": "за три месеца",
        "save": "Запазване на настройките",
        "not_valid": "Тази връзка не е валидна",
        "not_valid_help": "Възможно е да е копирана непълно. Използвайте връзката за отписване "
        "в края на някое от писмата ни или просто отговорете на него и ние ще се погрижим.",
        "questions": "Имате въпроси? Пишете ни на",
        "thanks_inquiry": "Благодарим Ви, съобщението Ви пристигна",
        "thanks_inquiry_help": "Изпратихме кратко писмо на адреса Ви с номера на запитването. "
        "Наш колега ще Ви отговори по имейл.",
        "thanks_subscribe": "Почти готово: проверете пощата си",
        "thanks_subscribe_help": "Изпратихме Ви писмо с връзка. Отворете я, за да потвърдите "
        "абонамента си; дотогава няма да получавате бюлетини от нас.",
        "confirm_title": "Потвърдете абонамента си",
        "confirm_help": "Едно натискане и ще получавате нашите бюлетини и покани. Можете да се "
        "отпишете по всяко време от връзката във всяко писмо.",
        "confirm_button": "Да, абонирайте ме",
        "subscribed": "Абонирани сте. Благодарим Ви!",
        "form_problem": "Съобщението Ви не можа да бъде изпратено",
        "link_expired": "Тази връзка е изтекла",
        "link_expired_help": "Връзките за потвърждение са валидни ограничено време. "
        "Абонирайте се отново на нашия сайт и ще Ви изпратим нова.",
    },
    "id": {
        "title": "Preferensi email Anda",
        "for_address": "Untuk",
        "unsubscribe": "Berhenti berlangganan semuanya",
        "unsubscribed": "Anda telah berhenti berlangganan: Anda tidak akan lagi menerima "
        "buletin, ucapan, atau undangan dari kami. Balasan atas pertanyaan yang Anda kirim ke "
        "kami tetap akan sampai kepada Anda.",
        "changed_mind": "Berubah pikiran?",
        "resubscribe": "Berlangganan lagi",
        "resubscribed": "Selamat datang kembali! Anda berlangganan lagi dengan pilihan yang "
        "sama seperti sebelumnya.",
        "saved": "Preferensi Anda sudah disimpan.",
        "choose": "Atau pilih email yang ingin Anda terima",
        "marketing": "Buletin dan undangan webinar",
        "relationship": "Ucapan ulang tahun",
        "pause": "Istirahat sejenak",
        "no_pause": "tanpa jeda",
        "pause_30": "selama sebulan",
        "pause_90": "selama tiga bulan",
        "save": "Simpan preferensi saya",
        "not_valid": "Tautan ini tidak valid",
        "not_valid_help": "Mungkin tautannya tidak tersalin dengan lengkap. Gunakan tautan "
        "berhenti berlangganan di bagian bawah salah satu email kami, atau balas salah satunya "
        "dan kami akan mengurusnya.",
        "questions": "Ada pertanyaan? Kirim email ke",
        "thanks_inquiry": "Terima kasih, pesan Anda sudah kami terima",
        "thanks_inquiry_help": "Kami sudah mengirim email singkat ke alamat Anda beserta nomor "
        "referensinya. Tim kami akan membalas lewat email.",
        "thanks_subscribe": "Hampir selesai: periksa email Anda",
        "thanks_subscribe_help": "Kami sudah mengirim email berisi tautan. Buka tautan itu untuk "
        "mengonfirmasi langganan Anda; sebelum itu Anda tidak akan menerima buletin dari kami.",
        "confirm_title": "Konfirmasi langganan Anda",
        "confirm_help": "Satu klik dan Anda akan menerima buletin dan undangan kami. Anda bisa "
        "berhenti berlangganan kapan saja lewat tautan di setiap email.",
        "confirm_button": "Ya, saya mau berlangganan",
        "subscribed": "Anda sudah berlangganan. Terima kasih!",
        "form_problem": "Pesan Anda tidak dapat dikirim",
        "link_expired": "Tautan ini sudah kedaluwarsa",
        "link_expired_help": "Tautan konfirmasi hanya berlaku untuk waktu terbatas. Daftar lagi "
        "di situs kami dan kami akan mengirimkan tautan baru.",
    },
    "tl": {
        "title": "Mga setting ng inyong email",
        "for_address": "Para sa",
        "unsubscribe": "Mag-unsubscribe sa lahat",
        "unsubscribed": "Naka-unsubscribe na po kayo: hindi na kayo makatatanggap ng mga "
        "newsletter, pagbati o imbitasyon mula sa amin. Makatatanggap pa rin kayo ng mga "
        "sagot sa mga tanong na ipinadala ninyo sa amin.",
        "changed_mind": "Nagbago ang isip ninyo?",
        "resubscribe": "I-subscribe ulit ako",
        "resubscribed": "Maligayang pagbabalik! Naka-subscribe na po ulit kayo, gamit ang dati "
        "ninyong mga pinili.",
        "saved": "Nai-save na po ang inyong mga setting.",
        "choose": "O piliin kung ano ang matatanggap ninyo",
        "marketing": "Mga newsletter at imbitasyon sa webinar",
        "relationship": "Mga pagbati sa kaarawan",
        "pause": "Magpahinga muna",
        "no_pause": "walang pahinga",
        "pause_30": "nang isang buwan",
        "pause_90": "nang tatlong buwan",
        "save": "I-save ang aking mga setting",
        "not_valid": "Hindi valid ang link na ito",
        "not_valid_help": "Baka hindi nakopya nang buo ang link. Gamitin ang link para "
        "mag-unsubscribe sa ibaba ng alinman sa aming mga email, o i-reply lang ito at kami na "
        "ang bahala.",
        "questions": "May tanong? Sumulat sa",
        "thanks_inquiry": "Salamat po, natanggap namin ang inyong mensahe",
        "thanks_inquiry_help": "Nagpadala kami ng maikling email sa inyong address kasama ang "
        "inyong reference number. Sasagutin kayo ng aming team sa email.",
        "thanks_subscribe": "Malapit na: tingnan ang inyong email",
        "thanks_subscribe_help": "Nagpadala kami ng email na may link. Buksan ito para "
        "kumpirmahin ang inyong subscription; hanggang doon, wala kayong matatanggap na "
        "newsletter mula sa amin.",
        "confirm_title": "Kumpirmahin ang inyong subscription",
        "confirm_help": "Isang click lang at makatatanggap na kayo ng aming mga newsletter at "
        "imbitasyon. Puwede kayong mag-unsubscribe anumang oras gamit ang link sa bawat email.",
        "confirm_button": "Oo, i-subscribe ako",
        "subscribed": "Naka-subscribe na po kayo. Salamat!",
        "form_problem": "Hindi naipadala ang inyong mensahe",
        "link_expired": "Nag-expire na ang link na ito",
        "link_expired_help": "May takdang oras lang ang bisa ng mga link ng kumpirmasyon. "
        "Mag-sign up muli sa aming website at magpapadala kami ng bago.",
    },
}


def language(locale: str | None) -> str:
    """The catalogue's language for a locale: "bg-BG" and "bg_BG" give "bg", an unknown or
    missing one gives English."""
    code = (locale or "").strip().replace("_", "-").split("-")[0].lower()
    return code if code in WORDS else DEFAULT


def from_header(accept_language: str) -> str:
    """The best catalogue language for a browser's Accept-Language, for pages that do not
    know the customer (a broken link): "tl-PH,en;q=0.8" gives "tl"."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept_language.split(",")):
        tag, _, weight = item.strip().partition(";q=")
        try:
            quality = float(weight) if weight else 1.0
        except ValueError:
            continue
        known = language(tag) != DEFAULT or tag.strip().lower().startswith(DEFAULT)
        if known and quality > 0:
            ranked.append((-quality, position, language(tag)))
    return min(ranked)[2] if ranked else DEFAULT
