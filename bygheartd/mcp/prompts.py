"""The text of the MCP prompts (`write_song`): how an assistant should write a song before
it spends credits on one.
"""

from __future__ import annotations


def write_song_prompt(
    topic: str,
    genre: str,
    mood: str,
    *,
    guide_uri: str,
    language: str = "",
    model: str = "",
) -> str:
    """The `write_song` prompt: a complete song file first, then one generate_song call."""
    genre_line = f"Genre: {genre}." if genre.strip() else "Pick a genre that suits the topic."
    mood_line = f"Mood: {mood}." if mood.strip() else "Pick a mood that suits the topic."
    extra = []
    if language.strip():
        extra.append(f"Write the lyrics in {language.strip()} (language: {language.strip()}).")
    if model.strip():
        extra.append(f"Generate it with model={model.strip()}.")
    extra_line = (" ".join(extra) + "\n") if extra else ""
    return f"""Write a complete, original song about: {topic}
{genre_line} {mood_line}
{extra_line}
First read the songwriting guide ({guide_uri}) and call list_models and get_credits.

1. Write the whole song file, front matter and lyrics, like this:

---
title: <a short title>
style: <genre, mood, instruments, vocal character, production; no tempo or key here>
duration: <seconds: about 4 s per sung line plus intro and outro, or "auto">
language: <the lyrics' language code, e.g. en>
---
[Intro]

[Verse 1]
<4-8 lines of 6-10 syllables; matching lines have similar length>

[Chorus]
<the hook: short, singable, repeated word for word each time>

[Verse 2]
...

[Bridge]
...

[Final Chorus]
...

[Outro]

2. Keep one central image, concrete details, natural rhymes. Keep tags simple (at most one
   modifier, as in [Chorus - anthemic]); style words go in the style line, not in the lyrics.
   Make the style line and the tags agree (same instruments, same energy).
3. Show the song file to the user.
4. Call generate_song with lyrics (everything after the front matter, complete and unshortened),
   style, title and duration from the front matter, plus wait_seconds=45. Do not invent bpm,
   key or time_signature unless the song needs them.
5. If it is not done yet, call get_song with wait_seconds=45 until it is. Then give the user the
   file paths, and check that lyrics_lines in the result matches the lines you wrote.
"""
