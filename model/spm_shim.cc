// The sentencepiece C++ library behind a C interface. Nothing here may let
// an exception escape: every entry point that can throw catches everything
// and reports it through the caller's message buffer.
#include "model/spm_shim.h"

#include <sentencepiece_processor.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

struct spm_shim {
    sentencepiece::SentencePieceProcessor proc;
    bool loaded = false;
};

namespace {

int fail(char *msg, size_t cap, const char *what, const std::string &why)
{
    if (msg && cap)
        std::snprintf(msg, cap, "%s: %s", what, why.c_str());
    return -1;
}

int fail_status(char *msg, size_t cap, const char *what, const sentencepiece::util::Status &st)
{
    return fail(msg, cap, what, st.ToString());
}

bool valid_id(const spm_shim *s, int id)
{
    return s && s->loaded && id >= 0 && id < s->proc.GetPieceSize();
}

} // namespace

extern "C" {

spm_shim *spm_shim_new(void)
{
    try {
        return new spm_shim();
    } catch (...) {
        return nullptr;
    }
}

void spm_shim_free(spm_shim *s)
{
    delete s;
}

int spm_shim_load_file(spm_shim *s, const char *path, char *msg, size_t msg_cap)
{
    try {
        s->loaded = false;
        auto st = s->proc.Load(path);
        if (!st.ok())
            return fail_status(msg, msg_cap, "sentencepiece could not load the model", st);
        s->loaded = true;
        return 0;
    } catch (const std::exception &e) {
        return fail(msg, msg_cap, "sentencepiece could not load the model", e.what());
    } catch (...) {
        return fail(msg, msg_cap, "sentencepiece could not load the model", "unknown C++ exception");
    }
}

int spm_shim_load_proto(spm_shim *s, const void *bytes, size_t n, char *msg, size_t msg_cap)
{
    try {
        s->loaded = false;
        auto st = s->proc.LoadFromSerializedProto(
            absl::string_view(static_cast<const char *>(bytes), n));
        if (!st.ok())
            return fail_status(msg, msg_cap, "sentencepiece rejected the model", st);
        s->loaded = true;
        return 0;
    } catch (const std::exception &e) {
        return fail(msg, msg_cap, "sentencepiece rejected the model", e.what());
    } catch (...) {
        return fail(msg, msg_cap, "sentencepiece rejected the model", "unknown C++ exception");
    }
}

int spm_shim_encode(const spm_shim *s, const char *text, size_t len, int32_t **ids, int *n,
                    char *msg, size_t msg_cap)
{
    *ids = nullptr;
    *n = 0;
    if (!s->loaded)
        return fail(msg, msg_cap, "encode", "no model is loaded");
    try {
        std::vector<int> out;
        auto st = s->proc.Encode(absl::string_view(text, len), &out);
        if (!st.ok())
            return fail_status(msg, msg_cap, "sentencepiece could not encode the text", st);
        if (out.size() > (size_t)INT_MAX)
            return fail(msg, msg_cap, "encode", "too many tokens");
        if (out.empty())
            return 0;
        int32_t *buf = static_cast<int32_t *>(std::malloc(out.size() * sizeof *buf));
        if (!buf)
            return fail(msg, msg_cap, "encode", "out of memory");
        for (size_t i = 0; i < out.size(); i++)
            buf[i] = out[i];
        *ids = buf;
        *n = (int)out.size();
        return 0;
    } catch (const std::exception &e) {
        return fail(msg, msg_cap, "encode", e.what());
    } catch (...) {
        return fail(msg, msg_cap, "encode", "unknown C++ exception");
    }
}

int spm_shim_decode(const spm_shim *s, const int32_t *ids, int n, char **text, size_t *len,
                    char *msg, size_t msg_cap)
{
    *text = nullptr;
    *len = 0;
    if (!s->loaded)
        return fail(msg, msg_cap, "decode", "no model is loaded");
    try {
        std::vector<int> in(ids, ids + (n > 0 ? n : 0));
        std::string out;
        auto st = s->proc.Decode(in, &out);
        if (!st.ok())
            return fail_status(msg, msg_cap, "sentencepiece could not decode the ids", st);
        char *buf = static_cast<char *>(std::malloc(out.size() + 1));
        if (!buf)
            return fail(msg, msg_cap, "decode", "out of memory");
        std::memcpy(buf, out.data(), out.size());
        buf[out.size()] = '\0';
        *text = buf;
        *len = out.size();
        return 0;
    } catch (const std::exception &e) {
        return fail(msg, msg_cap, "decode", e.what());
    } catch (...) {
        return fail(msg, msg_cap, "decode", "unknown C++ exception");
    }
}

int spm_shim_vocab_size(const spm_shim *s)
{
    return s->loaded ? s->proc.GetPieceSize() : 0;
}

const char *spm_shim_id_to_piece(const spm_shim *s, int id, size_t *len)
{
    if (!valid_id(s, id))
        return nullptr;
    const std::string &piece = s->proc.IdToPiece(id);
    *len = piece.size();
    return piece.c_str();
}

int spm_shim_piece_to_id(const spm_shim *s, const char *piece, size_t len)
{
    if (!s->loaded)
        return -1;
    try {
        absl::string_view want(piece, len);
        int id = s->proc.PieceToId(want);
        // An absent piece maps to unk; only an exact match counts.
        if (!valid_id(s, id) || absl::string_view(s->proc.IdToPiece(id)) != want)
            return -1;
        return id;
    } catch (...) {
        return -1;
    }
}

spm_piece_kind spm_shim_piece_kind(const spm_shim *s, int id)
{
    if (!valid_id(s, id))
        return SPM_PIECE_UNUSED;
    if (s->proc.IsControl(id))
        return SPM_PIECE_CONTROL;
    if (s->proc.IsUnknown(id))
        return SPM_PIECE_UNKNOWN;
    if (s->proc.IsByte(id))
        return SPM_PIECE_BYTE;
    if (s->proc.IsUnused(id))
        return SPM_PIECE_UNUSED;
    return SPM_PIECE_NORMAL;
}

int spm_shim_bos_id(const spm_shim *s) { return s->loaded ? s->proc.bos_id() : -1; }
int spm_shim_eos_id(const spm_shim *s) { return s->loaded ? s->proc.eos_id() : -1; }
int spm_shim_unk_id(const spm_shim *s) { return s->loaded ? s->proc.unk_id() : -1; }
int spm_shim_pad_id(const spm_shim *s) { return s->loaded ? s->proc.pad_id() : -1; }

} // extern "C"
