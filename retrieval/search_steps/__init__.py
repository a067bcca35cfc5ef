"""The steps of a hybrid search, one module each, run in this order by `retrieval.search.HybridSearcher`:

    catch_up     mirror other processes' writes (vectors, chunk->document map, BM25) before anything is read
    access_mask  the chunks the principal may see under the filters: FAISS selector and BM25 filter in one
    dense        FAISS candidates through that mask (IVF-PQ's re-scored exactly)   } run side by side
    keyword      BM25 candidates through the same mask                             }
    fuse         one ordering from the rankings the mode asks for (reciprocal rank fusion for hybrid)
    diversify    walk the fused list window by window: read rows (`rows`: the authoritative access check;
                 `readable_copy`: a chunk readable only through a duplicate shows as the duplicate), drop
                 near-duplicates of what is kept, then diversify within the window (`retrieval.diversity`)
    hits         the chosen rows as `Hit`s with every ranking's score and rank

Each step takes and returns plain values (`AccessMask`, `Ranking`, fused pairs, `Chosen`, `Hit`), so one can
be read, tested or measured alone.
"""
