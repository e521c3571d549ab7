;; counter: a per-deployment counter anyone may increment. Used by the stacks_contract_execution DAG
;; and tests/stacks. Clarity 2+.

(define-constant ERR_ZERO (err u100))

(define-data-var count uint u0)
(define-map increments principal uint)

(define-read-only (get-count)
  (var-get count))

(define-read-only (get-increments (who principal))
  (default-to u0 (map-get? increments who)))

(define-public (increment (by uint))
  (begin
    (asserts! (> by u0) ERR_ZERO)
    (var-set count (+ (var-get count) by))
    (map-set increments tx-sender (+ (get-increments tx-sender) by))
    (print {event: "increment", by: by, sender: tx-sender, count: (var-get count)})
    (ok (var-get count))))

(define-public (reset)
  (begin
    (var-set count u0)
    (ok true)))
