;; token: a minimal SIP-010-shaped fungible token. The deployer is the only minter.

(define-fungible-token tributary-token)

(define-constant CONTRACT_OWNER tx-sender)
(define-constant ERR_OWNER_ONLY (err u100))
(define-constant ERR_NOT_TOKEN_OWNER (err u101))

(define-read-only (get-name) (ok "Tributary Token"))
(define-read-only (get-symbol) (ok "TRIB"))
(define-read-only (get-decimals) (ok u6))
(define-read-only (get-total-supply) (ok (ft-get-supply tributary-token)))
(define-read-only (get-balance (who principal)) (ok (ft-get-balance tributary-token who)))
(define-read-only (get-token-uri) (ok none))

(define-public (mint (amount uint) (recipient principal))
  (begin
    (asserts! (is-eq tx-sender CONTRACT_OWNER) ERR_OWNER_ONLY)
    (ft-mint? tributary-token amount recipient)))

(define-public (transfer (amount uint) (sender principal) (recipient principal) (memo (optional (buff 34))))
  (begin
    (asserts! (is-eq tx-sender sender) ERR_NOT_TOKEN_OWNER)
    (try! (ft-transfer? tributary-token amount sender recipient))
    (match memo to-print (print to-print) 0x)
    (ok true)))
