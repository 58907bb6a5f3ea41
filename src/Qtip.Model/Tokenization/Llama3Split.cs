using System.Globalization;
using System.Text;

namespace Qtip.Model.Tokenization;

/// <summary>
/// Llama 3's pre-tokenizer split, <see cref="Pattern"/>, matched by hand over Unicode code points as Oniguruma (the
/// regex engine of Hugging Face <c>tokenizers</c>) matches it. .NET's Regex works on UTF-16 units, so <c>\p{L}</c>
/// and <c>\p{N}</c> never match a letter or digit outside the BMP (𝕏, 𠀀, 𝟙): the regex would split those where
/// Hugging Face does not. The alternatives are tried in order at each position, each with the backtracking the regex
/// would do; every code point is matched by one of them, so the pieces cover the text.
/// </summary>
public static class Llama3Split
{
    /// <summary>The pattern as it stands in Llama 3's <c>tokenizer.json</c> (and tiktoken's cl100k_base).</summary>
    public const string Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Appends the pieces of <paramref name="s"/> as (start, length) in UTF-16 units.</summary>
    public static void Split(string s, List<(int Start, int Length)> pieces)
    {
        for (int i = 0; i < s.Length;)
        {
            int end = Match(s, i);
            pieces.Add((i, end - i));
            i = end;
        }
    }

    private static int Match(string s, int i)
    {
        var (c0, w0) = At(s, i);
        int i1 = i + w0;
        bool has1 = i1 < s.Length;
        var (c1, w1) = has1 ? At(s, i1) : (0, 0);

        // (?i:'s|'t|'re|'ve|'m|'ll|'d) — case folding as Oniguruma's: ſ (U+017F) folds to s.
        if (c0 == '\'' && has1)
        {
            if (c1 is 's' or 'S' or 0x17F or 't' or 'T' or 'm' or 'M' or 'd' or 'D')
                return i1 + w1;
            int i2 = i1 + w1;
            if (i2 < s.Length)
            {
                var (c2, w2) = At(s, i2);
                if ((c1 is 'r' or 'R' or 'v' or 'V' && c2 is 'e' or 'E') || (c1 is 'l' or 'L' && c2 is 'l' or 'L'))
                    return i2 + w2;
            }
        }

        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (IsLetter(c0))
            return RunEnd(s, i, IsLetter);
        if (c0 is not ('\r' or '\n') && !IsNumber(c0) && has1 && IsLetter(c1))
            return RunEnd(s, i1, IsLetter);

        // \p{N}{1,3}
        if (IsNumber(c0))
        {
            int j = i;
            for (int k = 0; k < 3 && j < s.Length; k++)
            {
                var (c, w) = At(s, j);
                if (!IsNumber(c))
                    break;
                j += w;
            }
            return j;
        }

        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        if (IsOther(c0) || (c0 == ' ' && has1 && IsOther(c1)))
        {
            int j = RunEnd(s, IsOther(c0) ? i : i1, IsOther);
            while (j < s.Length && s[j] is '\r' or '\n')
                j++;
            return j;
        }

        // c0 is whitespace here (every code point is a letter, a number, whitespace or other).
        int end = RunEnd(s, i, IsSpace); // all whitespace code points are in the BMP: one unit each

        // \s*[\r\n]+ : \s* backs off to the last line break of the run.
        for (int k = end - 1; k >= i; k--)
        {
            if (s[k] is '\r' or '\n')
                return k + 1;
        }

        // \s+(?!\S) : the whole run at the end of the text, else the run less its last character.
        if (end == s.Length || end - 1 > i)
            return end == s.Length ? end : end - 1;

        // \s+
        return end;
    }

    private static (int Cp, int Width) At(string s, int i)
    {
        Rune.DecodeFromUtf16(s.AsSpan(i), out var r, out int w);
        return (r.Value, Math.Max(w, 1));
    }

    private static int RunEnd(string s, int i, Func<int, bool> inClass)
    {
        while (i < s.Length)
        {
            var (c, w) = At(s, i);
            if (!inClass(c))
                break;
            i += w;
        }
        return i;
    }

    /// <summary>\p{L}: Lu, Ll, Lt, Lm, Lo.</summary>
    internal static bool IsLetter(int cp) =>
        Rune.GetUnicodeCategory(new Rune(cp)) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
            or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter;

    /// <summary>\p{N}: Nd, Nl, No.</summary>
    internal static bool IsNumber(int cp) =>
        Rune.GetUnicodeCategory(new Rune(cp)) is UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber
            or UnicodeCategory.OtherNumber;

    /// <summary>\s in Oniguruma's Unicode mode: the White_Space property.</summary>
    internal static bool IsSpace(int cp) =>
        cp is (>= 0x09 and <= 0x0D) or 0x20 or 0x85 or 0xA0 or 0x1680 or (>= 0x2000 and <= 0x200A) or 0x2028 or 0x2029
            or 0x202F or 0x205F or 0x3000;

    /// <summary>[^\s\p{L}\p{N}].</summary>
    private static bool IsOther(int cp) => !IsSpace(cp) && !IsLetter(cp) && !IsNumber(cp);
}
